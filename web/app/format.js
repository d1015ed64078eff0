// Numbers as `mesh stat` prints them (cli/src/table.rs), so the page and the command
// it shows read alike.

/**
 * `v` with `d` decimals as Rust's `format!("{v:.d$}")` writes it: `toFixed` rounds an
 * exact tie up (12.25 to 12.3) where Rust rounds it to even (12.2), so a tie is
 * found in the exact decimal expansion and settled as Rust does.
 */
export function fixed(v, d) {
  const s = v.toFixed(d);
  if (!Number.isFinite(v)) return s;
  const exact = Math.abs(v).toFixed(Math.min(100, d + 30));
  const dot = exact.indexOf('.');
  if (!/^50*$/.test(exact.slice(dot + 1 + d))) return s;
  const kept = exact.slice(0, d === 0 ? dot : dot + 1 + d);
  if (Number(kept.at(-1)) % 2 === 1) return s;
  return (v < 0 ? '-' : '') + kept;
}

/** A success rate (0..1) as a percentage with two decimals; `-` without responses. */
export function percent(v) {
  return v == null ? '-' : `${fixed(v * 100, 2)}%`;
}

/** Whether a row (of stat, or an edge) counted any responses. */
export function responded(r) {
  return r.responses.success + r.responses.failure > 0;
}

/** Responses per second, one decimal; `-` when there were no responses to count. */
export function rps(v, any) {
  return any ? `${fixed(v, 1)}rps` : '-';
}

/**
 * What the destination's inbound policy refused of an edge's calls, as `denied 1.0/s`
 * (requests and connections a second); `null` when it refused nothing.
 */
export function denied(e) {
  const v = e.unauthorized_rps ?? 0;
  return v > 0 ? `denied ${fixed(v, 1)}/s` : null;
}

/** A latency in whole milliseconds (halves away from zero, as Rust's `round`). */
export function ms(v) {
  return v == null ? '-' : `${Math.sign(v) * Math.round(Math.abs(v)) || 0}ms`;
}

/** Open TCP connections, as `mesh stat`'s TCP_CONN: `-` when none were open or opened. */
export function conns(tcp) {
  return tcp && (tcp.open_connections > 0 || tcp.opened > 0) ? String(tcp.open_connections) : '-';
}

/** Bytes per second, one decimal (`mesh stat -o wide`'s READ_BYTES/SEC). */
export function bytesPerSecond(v) {
  return `${fixed(v, 1)}B/s`;
}

/** Meshed over all pods. */
export function pods(p) {
  return p ? `${p.meshed}/${p.total}` : '-';
}

/** How a success rate reads at a glance: good, degraded, failing, or none. */
export function health(v) {
  if (v == null) return 'none';
  if (v >= 0.95) return 'good';
  if (v >= 0.8) return 'warn';
  return 'bad';
}

/**
 * A latency in whole microseconds as `mesh top` shows one (cli/src/top.rs): µs under
 * a millisecond, whole ms under a second, else seconds with two decimals (half up).
 */
export function latency(us) {
  if (us == null) return '-';
  if (us < 1000) return `${us}µs`;
  const millis = Math.floor(us / 1000);
  if (millis < 1000) return `${millis}ms`;
  const hundredths = Math.floor((millis + 5) / 10);
  return `${Math.floor(hundredths / 100)}.${String(hundredths % 100).padStart(2, '0')}s`;
}

/** Milliseconds as the API writes them (`best_ms`: a float) in whole microseconds. */
export function micros(ms) {
  return ms == null ? null : Math.floor(ms * 1000 + 1e-3);
}

// The tap page (`#/tap?resource=deploy/web&namespace=demo&...`): a filter form whose
// fields are `mesh tap`'s flags (filter.js), Start and Stop, and the live requests
// from `/api/stream/tap` (Server-Sent Events, each event as `mesh tap -o json` prints
// it: mesh_core::top::json), one row per request, newest first.
//
// Built for hundreds of events a second: events are only queued as they come, and
// the table changes in an animation frame at most ten times a second, by the rows
// that are new or changed (never redrawn whole); the newest `KEPT` requests are kept (rows expanded by the
// reader stay until collapsed). The stream is read with `fetch`, not `EventSource`,
// so a refusal's words (400 for a bad filter, 401/403 in a cluster) can be shown, and
// so Stop (an abort) closes the connection and ends the tap at the controller.

import { command, h, setCommand } from './dom.js';
import { commandLine, FIELDS, filterForm, fromQuery, mirror, refusal, toQuery } from './filter.js';
import { latency } from './format.js';

/** A row's time, as the reader's locale writes a time (one formatter for every row). */
const TIME = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

/**
 * The least time between two changes of the table, as `mesh top` redraws (10 a
 * second): each change shifts the rows, and so repaints the table; more often costs
 * the page's frames and shows the reader nothing more.
 */
const REDRAW_MS = 100;

/** How many requests the table keeps. */
export const KEPT = 500;

const COLUMNS = ['', 'Time', 'Proxy', 'Source', 'Destination', 'Method', 'Path', 'Status', 'gRPC', 'Latency', 'Bytes', 'mTLS', 'Policy'];

/** Shows the tap page in `main` (a page of `routes.js`). */
export function tap(main, { query }) {
  let filter = fromQuery(query, FIELDS);
  const cmd = command(commandLine('tap', filter));
  const start = h('button', { type: 'submit', id: 'tap-start', class: 'primary' }, 'Start');
  const stop = h('button', { type: 'button', id: 'tap-stop', disabled: true, onclick: () => end('Stopped.') }, 'Stop');
  const { form } = filterForm({
    id: 'tap-filter', shown: FIELDS, filter, buttons: [start, stop],
    onInput(f) {
      filter = f;
      setCommand(cmd, commandLine('tap', f));
    },
    onSubmit(f) {
      filter = f;
      mirror('tap', f);
      begin(f);
    },
  });
  const said = h('p', { id: 'tap-status', class: 'tap-status', role: 'status', 'aria-live': 'polite' },
    'Fill in what to tap, then Start.');
  const counts = h('p', { id: 'tap-counts', class: 'updated' });
  const tbody = h('tbody');
  const table = h('table', { id: 'tap-requests', class: 'data tap' },
    h('caption', {}, `The requests tapped, newest first; the newest ${KEPT} are kept. Expand a row for its headers and identities.`),
    h('thead', {}, h('tr', {}, COLUMNS.map((c, i) =>
      h('th', { scope: 'col', class: i >= 7 && i <= 10 ? 'num' : null }, i === 0 ? h('span', { class: 'visually-hidden' }, 'Details') : c)))),
    tbody);
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Tap'),
    cmd, form, said, counts,
    h('div', { class: 'scroll tap-scroll' }, table)));
  main.dataset.tap = 'idle';

  // The requests kept, oldest first (a Map keeps its insertion order).
  const kept = new Map();
  let queue = [];
  let frame = 0;
  let seen = 0;
  let events = 0;
  let session = null;
  let opened = 0;
  // Requests not in the table yet (oldest first), and whether the pointer is over it.
  let waiting = [];
  let pointer = false;
  let drawn = -Infinity;
  table.addEventListener('pointerenter', () => { pointer = true; });
  table.addEventListener('pointerleave', () => { pointer = false; release(); });
  table.addEventListener('focusout', () => setTimeout(release));

  function say(text, state) {
    if (said.textContent !== text) said.textContent = text;
    said.classList.toggle('tap-error', state === 'error');
    main.dataset.tap = state;
    start.disabled = state === 'streaming' || state === 'starting';
    stop.disabled = !start.disabled;
  }

  /** Ends the stream, if one is open, saying why. */
  function end(why, state = 'stopped') {
    session?.abort();
    session = null;
    say(why, state);
  }

  async function begin(f) {
    end('Starting…', 'starting');
    const ctl = new AbortController();
    session = ctl;
    cancelAnimationFrame(frame);
    frame = 0;
    queue = [];
    waiting = [];
    kept.clear();
    tbody.replaceChildren();
    seen = 0;
    events = 0;
    counts.textContent = '';
    table.dataset.seen = '0';
    const url = `/api/stream/tap?${toQuery(f)}`;
    let rsp;
    try {
      rsp = await fetch(url, { headers: { accept: 'text/event-stream' }, cache: 'no-store', signal: ctl.signal });
    } catch (e) {
      if (session === ctl) end(`Cannot reach the controller (${e.message}).`, 'error');
      return;
    }
    if (session !== ctl) return;
    if (!rsp.ok) {
      const why = await refusal(rsp);
      if (session === ctl) end(why, 'error');
      return;
    }
    say(`Tapping ${f.resource}${f.namespace ? ` in ${f.namespace}` : ''}…`, 'streaming');
    try {
      await read(rsp.body, ctl);
    } catch (e) {
      if (session === ctl) end(`The stream broke (${e.message}); Start again to tap again.`, 'error');
      return;
    }
    if (session === ctl) end('The tap ended: the controller closed the stream (every pod’s stream ended). Start again to tap again.');
  }

  /** Reads Server-Sent Events from `body` until it ends or `ctl` aborts. */
  async function read(body, ctl) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || session !== ctl) return;
      buf += value.replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        sse(block, ctl);
        if (session !== ctl) return;
      }
    }
  }

  /** One event block: `event: tap` is queued, `event: error` ends the tap. */
  function sse(block, ctl) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      const colon = line.indexOf(':');
      if (colon === 0) continue;
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (!data.length) return;
    let doc;
    try {
      doc = JSON.parse(data.join('\n'));
    } catch (e) {
      console.error('/api/stream/tap: an event that is not JSON', e);
      return;
    }
    if (name === 'error') {
      end(`The tap API stopped the tap: ${doc?.error ?? 'no reason given'}.`, 'error');
      ctl.abort();
    } else if (name === 'tap' && doc && typeof doc === 'object') {
      events += 1;
      queue.push(doc);
      if (!frame) frame = requestAnimationFrame(draw);
    }
  }

  /**
   * Once a frame: the queued events into their requests, and the table changed by
   * them. While the reader is in the table (the pointer over it, or the focus in it)
   * the rows hold still: new requests wait, the newest `KEPT` of them, and go in
   * when the reader leaves; the rows shown still fill in as their answers come.
   */
  function draw(now) {
    if (now - drawn < REDRAW_MS) {
      frame = requestAnimationFrame(draw);
      return;
    }
    drawn = now;
    frame = 0;
    const batch = queue;
    queue = [];
    const changed = new Set();
    for (const ev of batch) {
      const key = `${ev.proxy} ${ev.source} ${ev.destination} ${ev.id}`;
      let r = kept.get(key);
      if (!r || (ev.event === 'req' && r.req)) {
        // A request id seen again is a new request on a reused stream id.
        if (r) drop(r);
        r = { key, at: new Date(), req: null, rsp: null, end: null, row: null, details: null };
        kept.set(key, r);
        waiting.push(r);
        seen += 1;
      }
      r[ev.event === 'req' ? 'req' : ev.event === 'rsp' ? 'rsp' : 'end'] = ev;
      changed.add(r);
    }
    if (held()) {
      while (waiting.length > KEPT) kept.delete(waiting.shift().key);
    } else {
      // The oldest go first, but not one the reader has open.
      let over = kept.size - KEPT;
      for (const r of kept.values()) {
        if (over <= 0) break;
        if (r.details) continue;
        drop(r);
        over -= 1;
      }
      const rows = document.createDocumentFragment();
      for (let i = waiting.length - 1; i >= 0; i -= 1) {
        const r = waiting[i];
        if (kept.get(r.key) !== r) continue;
        r.row = row(r);
        rows.append(r.row);
        changed.delete(r);
      }
      waiting = [];
      tbody.prepend(rows);
    }
    for (const r of changed) {
      if (!r.row || kept.get(r.key) !== r) continue;
      fill(r);
      if (r.details) r.details.firstChild.replaceChildren(...details(r));
    }
    const shown = kept.size - waiting.length;
    const hold = waiting.length
      ? ` Held still while the pointer or the focus is in the table: ${waiting.length} newer waiting.` : '';
    counts.textContent = `${seen} requests (${events} events) since Start; ${shown} shown.${hold}`;
    table.dataset.seen = String(seen);
    table.classList.toggle('held', Boolean(waiting.length));
  }

  /** Whether the reader is in the table, so its rows must not move. */
  function held() {
    return pointer || table.contains(document.activeElement);
  }

  /** The reader left the table: what waited goes in. */
  function release() {
    if (!held() && waiting.length && !frame) frame = requestAnimationFrame(draw);
  }

  function drop(r) {
    if (kept.get(r.key) === r) kept.delete(r.key);
    r.row?.remove();
    r.details?.remove();
  }

  function row(r) {
    const toggle = h('button', {
      type: 'button', class: 'expand', 'aria-expanded': 'false',
      'aria-label': 'Show the request’s details',
      onclick: () => expand(r, toggle),
    }, '▸');
    const tr = h('tr', { dataset: { key: r.key } },
      h('td', {}, toggle),
      ...COLUMNS.slice(1).map((_, i) => h(i === 0 ? 'th' : 'td', {
        scope: i === 0 ? 'row' : null, class: i >= 6 && i <= 9 ? 'num' : null,
      })));
    r.row = tr;
    fill(r);
    return tr;
  }

  /** The row's cells from what is known of the request so far. */
  function fill(r) {
    const any = r.req ?? r.rsp ?? r.end;
    const cells = r.row.cells;
    const set = (i, text) => {
      if (cells[i].textContent !== text) cells[i].textContent = text;
    };
    set(1, TIME.format(r.at));
    set(2, any.proxy === 'in' ? 'inbound' : any.proxy === 'out' ? 'outbound' : '-');
    set(3, peer(any.source_labels, any.source));
    set(4, peer(any.destination_labels, any.destination));
    set(5, r.req?.method ?? '-');
    set(6, r.req?.path ?? '-');
    set(7, r.rsp ? String(r.rsp.status) : '-');
    set(8, r.end?.grpc_status ?? (r.end?.reset ? `reset ${r.end.reset}` : '-'));
    const us = r.end?.latency_us ?? r.rsp?.latency_us;
    set(9, us == null ? '-' : latency(us));
    set(10, r.end ? String(r.end.response_bytes) : '-');
    set(11, any.tls ? 'yes' : 'no');
    // The inbound policy's decision in `mesh tap`'s words (`authz=`); none outbound.
    const decision = any.authorization?.summary;
    set(12, decision ?? '-');
    const failed = (r.rsp && r.rsp.status >= 500) || r.rsp?.proxy_error || r.end?.reset;
    r.row.classList.toggle('failed', Boolean(failed));
    r.row.classList.toggle('denied', Boolean(decision && /^(DENIED|NOT_FOUND)/.test(decision)));
  }

  function expand(r, toggle) {
    if (r.details) {
      r.details.remove();
      r.details = null;
      toggle.setAttribute('aria-expanded', 'false');
      toggle.textContent = '▸';
      toggle.setAttribute('aria-label', 'Show the request’s details');
      return;
    }
    opened += 1;
    const id = `tap-details-${opened}`;
    r.details = h('tr', { class: 'details', id }, h('td', { colspan: COLUMNS.length }, details(r)));
    r.row.after(r.details);
    toggle.setAttribute('aria-expanded', 'true');
    toggle.setAttribute('aria-controls', id);
    toggle.textContent = '▾';
    toggle.setAttribute('aria-label', 'Hide the request’s details');
  }

  return { title: 'Tap', stop: () => { session?.abort(); session = null; cancelAnimationFrame(frame); } };
}

/** An end of a request as `mesh top` names it: its pod, else its address. */
function peer(labels, addr) {
  return labels?.pod || addr || '-';
}

/** The details of a request: what was sent and answered, and between whom. */
function details(r) {
  const any = r.req ?? r.rsp ?? r.end;
  const dl = (pairs) => h('dl', { class: 'pairs' },
    pairs.filter(([, v]) => v != null && v !== '').flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
  const end = (side) => {
    const labels = any[`${side}_labels`] ?? {};
    const identity = any[`${side}_identity`];
    return dl([
      ['Address', any[side]],
      ...Object.keys(labels).sort().map((k) => [k, labels[k]]),
      ['Identity', identity || (any.tls ? 'not in the event (the tapped pod’s own side)' : 'none (no mesh TLS)')],
    ]);
  };
  return [
    h('div', { class: 'detail-grid' },
      h('section', { 'aria-label': 'Request' }, h('h2', {}, 'Request'),
        r.req ? dl([['Method', r.req.method], ['Scheme', r.req.scheme], ['Authority', r.req.authority],
          ['Path', r.req.path], ['Route', any.route_labels?.route],
          ['Policy', any.authorization?.summary], ['Policy route', any.authorization?.route]])
          : h('p', { class: 'empty' }, 'Began before the tap did: not seen.'),
        headers('Request headers', r.req?.headers)),
      h('section', { 'aria-label': 'Response' }, h('h2', {}, 'Response'),
        r.rsp || r.end ? dl([
          ['Status', r.rsp?.status], ['Proxy error', r.rsp?.proxy_error],
          ['gRPC status', r.end?.grpc_status], ['Reset', r.end?.reset],
          ['Latency to headers', r.rsp ? latency(r.rsp.latency_us) : null],
          ['Latency to end', r.end ? latency(r.end.latency_us) : null],
          ['Body duration', r.end ? latency(r.end.duration_us) : null],
          ['Bytes', r.end?.response_bytes]])
          : h('p', { class: 'empty' }, 'No response yet.'),
        headers('Response headers', r.rsp?.headers),
        headers('Trailers', r.end?.trailers)),
      h('section', { 'aria-label': 'Source' }, h('h2', {}, 'Source'), end('source')),
      h('section', { 'aria-label': 'Destination' }, h('h2', {}, 'Destination'), end('destination'),
        h('p', {}, any.tls ? `mTLS: yes, between proxies (seen by the ${any.proxy === 'in' ? 'destination' : 'source'}’s proxy).`
          : 'mTLS: no.'))),
  ];
}

/** Headers as they were sent (a redacted one stays `[redacted]`). */
function headers(caption, list) {
  if (!Array.isArray(list) || !list.length) return null;
  return h('table', { class: 'headers' },
    h('caption', {}, caption),
    h('tbody', {}, list.map(({ name, value }) =>
      h('tr', {}, h('th', { scope: 'row' }, name),
        h('td', { class: value === '[redacted]' ? 'redacted' : null }, value)))));
}

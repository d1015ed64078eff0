// The golden metrics' columns of a `sortableTable` (table.js), as `mesh stat` prints
// them: meshed pods, success rate (colour-coded), requests per second, latency
// percentiles, and optionally TCP connections. One place, for every page with a row
// per `/api/stat` row.

import { conns, health, ms, percent, pods, responded, rps } from './format.js';

const MESHED = { key: 'meshed', label: 'Meshed', num: true, value: (r) => r.pods?.meshed ?? null,
  attrs: (r) => ({ 'data-total': r.pods?.total ?? '' }), cell: (r) => pods(r.pods) };

const TRAFFIC = [
  { key: 'success', label: 'Success', num: true, value: (r) => r.success_rate,
    cls: (r) => `health-${health(r.success_rate)}`, cell: (r) => percent(r.success_rate) },
  { key: 'rps', label: 'RPS', num: true, value: (r) => r.rps, cell: (r) => rps(r.rps, responded(r)) },
  { key: 'p50', label: 'P50', num: true, value: (r) => r.latency_ms.p50, cell: (r) => ms(r.latency_ms.p50) },
  { key: 'p95', label: 'P95', num: true, value: (r) => r.latency_ms.p95, cell: (r) => ms(r.latency_ms.p95) },
  { key: 'p99', label: 'P99', num: true, value: (r) => r.latency_ms.p99, cell: (r) => ms(r.latency_ms.p99) },
];

const TCP = { key: 'tcp', label: 'TCP conns', num: true, value: (r) => r.tcp.open_connections,
  cell: (r) => conns(r.tcp) };

/**
 * The columns after a row's name: `meshed` for resources made of pods (not
 * services), `tcp` for the open TCP connections (`mesh stat`'s TCP_CONN).
 */
export function goldenColumns({ meshed = true, tcp = false } = {}) {
  return [meshed && MESHED, ...TRAFFIC, tcp && TCP].filter(Boolean);
}

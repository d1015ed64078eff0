// A sortable data table, accessible: a <caption>, <th scope> on both axes, and in each
// column header a button (so sorting works from the keyboard) whose column carries
// `aria-sort`. Rows are rebuilt from data on each update; the sort, and the focus of a
// control inside a row, survive the update.

import { h } from './dom.js';
import { health, ms, percent, rps } from './format.js';

/**
 * columns: [{ key, label, num?, value(row), cell(row), cls?(row), attrs?(row) }]:
 * `value` is what the column sorts by and what the cell's `data-value` holds (null
 * sorts last either way); `cell` is what it shows. The first column heads each row.
 */
export function sortableTable({ id, caption, columns, rowKey, empty }) {
  const state = { key: columns[0].key, dir: 'ascending', rows: [] };
  const tbody = h('tbody');
  const heads = columns.map((c) =>
    h('th', { scope: 'col', class: c.num ? 'num' : null, dataset: { key: c.key } },
      h('button', { type: 'button', class: 'sort', onclick: () => sortBy(c) }, c.label)));
  const table = h('table', { id, class: 'data' },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, heads)),
    tbody);

  function sortBy(column) {
    if (state.key === column.key) {
      state.dir = state.dir === 'ascending' ? 'descending' : 'ascending';
    } else {
      state.key = column.key;
      // Numbers read best biggest first; names A to Z.
      state.dir = column.num ? 'descending' : 'ascending';
    }
    render();
  }

  function render() {
    for (const th of heads) {
      th.setAttribute('aria-sort', th.dataset.key === state.key ? state.dir : 'none');
    }
    const column = columns.find((c) => c.key === state.key);
    const sign = state.dir === 'ascending' ? 1 : -1;
    const rows = [...state.rows].sort((a, b) =>
      compare(column.value(a), column.value(b), sign) ||
      compare(rowKey(a), rowKey(b), 1));
    // The control that had the focus, found again in its rebuilt row.
    const active = document.activeElement;
    const focused = tbody.contains(active) ?
      [active.closest('tr')?.dataset.key, active.closest('[data-key]')?.dataset.key] : null;
    tbody.replaceChildren(...(rows.length ? rows.map(row) :
      [h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty))]));
    if (focused) {
      const tr = [...tbody.rows].find((r) => r.dataset.key === focused[0]);
      tr?.querySelector(`[data-key="${CSS.escape(focused[1] ?? '')}"] a, [data-key="${CSS.escape(focused[1] ?? '')}"] button`)?.focus();
    }
  }

  function row(r) {
    return h('tr', { dataset: { key: rowKey(r) } }, columns.map((c, i) => {
      const v = c.value(r);
      const cls = [c.num && 'num', c.cls?.(r)].filter(Boolean).join(' ');
      return h(i === 0 ? 'th' : 'td', {
        scope: i === 0 ? 'row' : null,
        class: cls || null,
        ...(c.attrs?.(r) ?? {}),
        dataset: { key: c.key, value: v == null ? '' : String(v) },
      }, c.cell(r));
    }));
  }

  render();
  return {
    table,
    update(rows) {
      state.rows = rows;
      render();
    },
  };
}

/** Whether a row of a stat answer counted any response. */
export const anyResponses = (r) => r.responses.success + r.responses.failure > 0;

/**
 * The golden-metric columns of a stat answer's rows (success colour-coded, rps, p50,
 * p95, p99), as `mesh stat` prints them; the pages' tables put them after their own.
 */
export function goldenColumns() {
  return [
    { key: 'success', label: 'Success', num: true, value: (r) => r.success_rate,
      cls: (r) => `health-${health(r.success_rate)}`, cell: (r) => percent(r.success_rate) },
    { key: 'rps', label: 'RPS', num: true, value: (r) => r.rps, cell: (r) => rps(r.rps, anyResponses(r)) },
    { key: 'p50', label: 'P50', num: true, value: (r) => r.latency_ms.p50, cell: (r) => ms(r.latency_ms.p50) },
    { key: 'p95', label: 'P95', num: true, value: (r) => r.latency_ms.p95, cell: (r) => ms(r.latency_ms.p95) },
    { key: 'p99', label: 'P99', num: true, value: (r) => r.latency_ms.p99, cell: (r) => ms(r.latency_ms.p99) },
  ];
}

function compare(a, b, sign) {
  if (a == null || b == null) return (a == null) - (b == null);
  if (typeof a === 'string' || typeof b === 'string') {
    return sign * String(a).localeCompare(String(b));
  }
  return sign * (a - b);
}

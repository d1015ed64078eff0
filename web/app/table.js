// A sortable data table, accessible: a <caption>, <th scope> on both axes, and in each
// column header a button (so sorting works from the keyboard) whose column carries
// `aria-sort`. Rows are rebuilt from data on each update; the sort, and the focus of a
// control inside a row, survive the update.

import { h } from './dom.js';

/**
 * columns: [{ key, label, num?, value(row), cell(row), cls?(row), attrs?(row) }]:
 * `value` is what the column sorts by and what the cell's `data-value` holds (null
 * sorts last either way); `cell` is what it shows. The first column heads each row.
 * `sort`: the first order, `{ key, dir }` (by default the first column, ascending).
 */
export function sortableTable({ id, caption, columns, rowKey, empty, sort }) {
  const state = { key: sort?.key ?? columns[0].key, dir: sort?.dir ?? 'ascending', rows: [] };
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

function compare(a, b, sign) {
  if (a == null || b == null) return (a == null) - (b == null);
  if (typeof a === 'string' || typeof b === 'string') {
    return sign * String(a).localeCompare(String(b));
  }
  return sign * (a - b);
}

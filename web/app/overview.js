// The overview (`#/`): every namespace with its meshed and total pods and its golden
// metrics, from `/api/stat?resource=ns`, live.

import { command, h } from './dom.js';
import { healthSection } from './health.js';
import { pods } from './format.js';
import { subscribe } from './live.js';
import { goldenColumns, sortableTable } from './table.js';

const STAT = 'resource=ns';

const COLUMNS = [
  { key: 'name', label: 'Namespace', value: (r) => r.resource.name,
    cell: (r) => h('a', { href: `#/ns/${encodeURIComponent(r.resource.name)}` }, r.resource.name) },
  { key: 'meshed', label: 'Meshed', num: true, value: (r) => r.pods?.meshed ?? null,
    attrs: (r) => ({ 'data-total': r.pods?.total ?? '' }), cell: (r) => pods(r.pods) },
  ...goldenColumns(),
];

/** Shows the overview in `main` (a page of `routes.js`). */
export function overview(main, { onState }) {
  const table = sortableTable({
    id: 'namespaces',
    caption: 'Namespaces: meshed pods, success rate, requests per second and latency percentiles over the last minute',
    columns: COLUMNS,
    rowKey: (r) => r.resource.name,
    empty: 'Waiting for the controller…',
  });
  const updated = h('p', { class: 'updated', id: 'updated' });
  const health = healthSection();
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Overview'),
    command('mesh stat ns'),
    h('div', { class: 'scroll' }, table.table),
    updated,
    health.section));
  let first = true;
  const stopStat = subscribe({
    stream: `/api/stream/stat?${STAT}&interval=2s`,
    event: 'stat',
    poll: `/api/stat?${STAT}`,
    onState,
    onData(doc) {
      table.update(Array.isArray(doc.rows) ? doc.rows : []);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      if (first) {
        first = false;
        // The first real numbers on screen: what "interactive" is measured to.
        performance.mark('mesh:overview-data');
        main.dataset.loaded = 'true';
      }
    },
  });
  return { title: 'Overview', stop: () => { stopStat(); health.stop(); } };
}

// The top page (`#/top?resource=deploy/web&namespace=demo`): a resource's busiest
// paths, live, as `mesh top` shows them. The table is the controller's: `/api/top`
// taps for `SECONDS` and answers mesh_core::top's rows (the one table logic: the
// join of a request's events, the success rule, the caps), busiest first; the page
// asks again as soon as an answer is in, so each answer is the last few seconds.

import { command, h, setCommand } from './dom.js';
import { commandLine, fields, filterForm, fromQuery, mirror, refusal, toQuery } from './filter.js';
import { health, latency, micros, percent } from './format.js';
import { sortableTable } from './table.js';

/** How long each `/api/top` answer taps for. */
export const SECONDS = 5;

/** How long to wait before asking again after the controller could not be reached. */
const RETRY_MS = 2000;

const SHOWN = fields(['resource', 'namespace']);

const ms = (key) => (r) => micros(r[key]);

const COLUMNS = [
  { key: 'source', label: 'Source', value: (r) => r.source ?? '', cell: (r) => r.source ?? '-' },
  { key: 'destination', label: 'Destination', value: (r) => r.destination, cell: (r) => r.destination },
  { key: 'method', label: 'Method', value: (r) => r.method, cell: (r) => r.method },
  { key: 'path', label: 'Path', value: (r) => r.path, cell: (r) => r.path },
  { key: 'count', label: 'Count', num: true, value: (r) => r.count, cell: (r) => String(r.count) },
  { key: 'best', label: 'Best', num: true, value: ms('best_ms'), cell: (r) => latency(micros(r.best_ms)) },
  { key: 'worst', label: 'Worst', num: true, value: ms('worst_ms'), cell: (r) => latency(micros(r.worst_ms)) },
  { key: 'last', label: 'Last', num: true, value: ms('last_ms'), cell: (r) => latency(micros(r.last_ms)) },
  { key: 'success', label: 'Success', num: true, value: (r) => r.success_rate,
    cls: (r) => `health-${health(r.success_rate)}`, cell: (r) => percent(r.success_rate) },
];

/** Shows the top page in `main` (a page of `routes.js`). */
export function top(main, { query, onState }) {
  let filter = fromQuery(query, SHOWN);
  const cmd = command(commandLine('top', filter));
  const { form } = filterForm({
    id: 'top-filter', shown: SHOWN, filter,
    buttons: [h('button', { type: 'submit', class: 'primary' }, 'Show')],
    onInput(f) {
      setCommand(cmd, commandLine('top', f));
    },
    onSubmit(f) {
      filter = f;
      mirror('top', f);
      watch();
    },
  });
  const table = sortableTable({
    id: 'top-paths',
    caption: `The busiest paths over the last ${SECONDS} seconds of requests: how many, their latencies (best, worst, last) and success`,
    columns: COLUMNS,
    rowKey: (r) => `${r.source ?? ''} ${r.destination} ${r.method} ${r.path}`,
    empty: 'No requests yet.',
    sort: { key: 'count', dir: 'descending' },
  });
  const said = h('p', { id: 'top-status', class: 'tap-status', role: 'status', 'aria-live': 'polite' },
    'Name a resource, then Show.');
  const updated = h('p', { class: 'updated', id: 'top-updated' });
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'Top'),
    cmd, form, said,
    h('div', { class: 'scroll' }, table.table),
    updated));

  let ctl = null;
  let timer = 0;

  function say(text, error) {
    if (said.textContent !== text) said.textContent = text;
    said.classList.toggle('tap-error', Boolean(error));
  }

  function halt() {
    ctl?.abort();
    ctl = null;
    clearTimeout(timer);
  }

  /** Asks `/api/top` again and again for the filter, until halted or refused. */
  function watch() {
    halt();
    const mine = new AbortController();
    ctl = mine;
    table.update([]);
    updated.textContent = '';
    say(`Tapping ${filter.resource}${filter.namespace ? ` in ${filter.namespace}` : ''} for ${SECONDS} seconds…`);
    const url = `/api/top?${toQuery(filter)}&seconds=${SECONDS}`;
    const ask = async () => {
      let rsp;
      let doc;
      try {
        rsp = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store', signal: mine.signal });
        if (rsp.ok) doc = await rsp.json();
      } catch (e) {
        // Unreachable, or cut off mid-answer: said in the header, asked again.
        if (ctl !== mine) return;
        onState('retrying', e);
        timer = setTimeout(ask, RETRY_MS);
        return;
      }
      if (ctl !== mine) return;
      onState('live');
      if (!rsp.ok) {
        const why = await refusal(rsp);
        // A refusal stays one until the filter changes: said, not asked again.
        if (ctl === mine) say(why, true);
        return;
      }
      table.update(Array.isArray(doc.rows) ? doc.rows : []);
      say(`Showing ${filter.resource}${filter.namespace ? ` in ${filter.namespace}` : ''}, live.`);
      updated.textContent = `${doc.requests} requests (${doc.events} events) in the ${doc.seconds} seconds to ${new Date().toLocaleTimeString()}.`;
      main.dataset.answers = String(Number(main.dataset.answers ?? 0) + 1);
      ask();
    };
    ask();
  }

  if (filter.resource && !SHOWN.some((f) => f.check(filter[f.key] ?? ''))) watch();
  return { title: 'Top', stop: halt };
}

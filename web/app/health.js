// The control plane's health on the overview: the controller's own checks
// (`/api/health`, in `mesh check -o json`'s shape, each ID explained in
// docs/checks.md), polled; `mesh check` is the command that checks the rest.

import { command, h } from './dom.js';
import { subscribe } from './live.js';

const MARK = { success: '✓', warning: '‼', error: '✗' };
const WORD = { success: 'passed', warning: 'warning', error: 'failed' };
const EVERY = 10000;

/** The section, and the function that stops its polling. */
export function healthSection() {
  const summary = h('p', { class: 'health-summary', id: 'health-summary' }, 'Waiting for the controller…');
  const list = h('ul', { class: 'checks', id: 'checks', 'aria-label': 'Control-plane checks' });
  const section = h('section', { class: 'health', 'aria-labelledby': 'health-title' },
    h('h2', { id: 'health-title' }, 'Control plane'),
    command('mesh check'),
    summary,
    list);
  const stop = subscribe({
    poll: '/api/health',
    interval: EVERY,
    // The overview's table already says whether the controller is reachable.
    onState() {},
    onData(doc) {
      const checks = (Array.isArray(doc.categories) ? doc.categories : [])
        .flatMap((c) => (Array.isArray(c.checks) ? c.checks.map((k) => ({ ...k, category: c.name })) : []));
      const count = (r) => checks.filter((c) => c.result === r).length;
      const [errors, warnings] = [count('error'), count('warning')];
      summary.className = `health-summary health-${errors ? 'bad' : warnings ? 'warn' : 'good'}`;
      summary.textContent = `${errors ? `${errors} failed` : 'All passed'}` +
        `${warnings ? `, ${warnings} warning${warnings > 1 ? 's' : ''}` : ''}` +
        ` of ${checks.length} checks · controller ${doc.version ?? '?'}`;
      list.replaceChildren(...checks.map(item));
    },
  });
  return { section, stop };
}

function item(check) {
  const result = MARK[check.result] ? check.result : 'error';
  return h('li', { class: `check check-${result}`, dataset: { id: check.id, result } },
    h('span', { class: 'check-mark', 'aria-hidden': 'true' }, MARK[result]),
    h('span', { class: 'visually-hidden' }, `${WORD[result]}: `),
    h('span', { class: 'check-what' }, check.description),
    check.error ? h('span', { class: 'check-why' }, check.error) : null,
    Array.isArray(check.details) && check.details.length
      ? h('ul', { class: 'check-details' }, check.details.map((d) => h('li', {}, d))) : null,
    check.hint ? h('span', { class: 'check-hint' }, check.hint) : null);
}

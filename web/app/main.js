// The dashboard's entry: hash routing (`#/`, `#/ns/NAME`), the connection status and
// the controller's version in the header.

import { command, h } from './dom.js';
import { overview } from './overview.js';

const main = document.getElementById('main');
const status = document.getElementById('status');
let stop = null;

function onState(state) {
  const down = state === 'retrying';
  document.body.classList.toggle('disconnected', down);
  const text = down ? 'Disconnected, retrying…' : '';
  if (status.textContent !== text) status.textContent = text;
}

function namespace(name) {
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, `Namespace ${name}`),
    command(`mesh stat deploy -n ${name}`),
    h('p', {}, 'This namespace’s workloads, topology and traffic are not shown here yet. ',
      h('a', { href: '#/' }, 'Back to the overview'))));
  return `${name} · mesh`;
}

function notFound(hash) {
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'No such page'),
    h('p', {}, `Nothing is at ${hash}. `, h('a', { href: '#/' }, 'Go to the overview'))));
  return 'Not found · mesh';
}

function route(moved) {
  stop?.();
  stop = null;
  onState('live');
  const hash = location.hash || '#/';
  const ns = /^#\/ns\/([^/]+)$/.exec(hash);
  let title;
  if (hash === '#/' || hash === '#') {
    stop = overview(main, onState);
    title = 'Overview · mesh';
  } else if (ns) {
    let name = null;
    try {
      name = decodeURIComponent(ns[1]);
    } catch {
      // A malformed escape: no such namespace.
    }
    title = name == null ? notFound(hash) : namespace(name);
  } else {
    title = notFound(hash);
  }
  document.title = title;
  // After a click the reader continues at the new page's heading.
  if (moved) document.getElementById('page-title')?.focus();
}

async function version() {
  try {
    const rsp = await fetch('/api/version', { headers: { accept: 'application/json' } });
    if (!rsp.ok) return;
    const doc = await rsp.json();
    if (typeof doc.version === 'string') {
      document.getElementById('version').textContent = `controller ${doc.version}`;
    }
  } catch {
    // Shown as disconnected by the live data already.
  }
}

window.addEventListener('hashchange', () => route(true));
route(false);
version();

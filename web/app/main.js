// The dashboard's entry: hash routing over `routes.js`, the connection status and the
// controller's version in the header.

import { h } from './dom.js';
import { ROUTES } from './routes.js';

const main = document.getElementById('main');
const status = document.getElementById('status');
let stop = null;

function onState(state) {
  const down = state === 'retrying';
  document.body.classList.toggle('disconnected', down);
  const text = down ? 'Disconnected, retrying…' : '';
  if (status.textContent !== text) status.textContent = text;
}

function notFound(hash) {
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'No such page'),
    h('p', {}, `Nothing is at ${hash}. `, h('a', { href: '#/' }, 'Go to the overview'))));
  return { title: 'Not found' };
}

/** The newest navigation: a page that finishes loading after a newer one is dropped. */
let navigation = 0;

/** The page for a hash: `#/path?query`, the path matched against each route's pattern. */
async function show(hash, mine) {
  const q = hash.indexOf('?');
  const path = q < 0 ? hash : hash.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
  for (const { pattern, load } of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    let params;
    try {
      params = m.slice(1).map(decodeURIComponent);
    } catch {
      // A malformed escape names nothing.
      return notFound(hash);
    }
    let page;
    try {
      page = await load();
    } catch (e) {
      // The controller went away (or was upgraded) between pages.
      console.error(`cannot load the page for ${hash}`, e);
      return unloadable(hash);
    }
    // A newer navigation came while this page loaded: it is not drawn.
    if (mine !== navigation) return null;
    return page(main, { params, query, onState });
  }
  return notFound(hash);
}

function unloadable(hash) {
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, 'This page did not load'),
    h('p', {}, `The page for ${hash} could not be fetched from the controller. `,
      h('button', { type: 'button', onclick: () => route(true) }, 'Try again'))));
  return { title: 'Not loaded' };
}

async function route(moved) {
  const mine = ++navigation;
  stop?.();
  stop = null;
  onState('live');
  const hash = location.hash || '#/';
  const shown = await show(hash, mine);
  if (shown === null) return;
  stop = shown.stop ?? null;
  document.title = `${shown.title} · mesh`;
  // The nav marks where the reader is.
  for (const a of document.querySelectorAll('nav a')) {
    const here = hash === a.getAttribute('href') || hash.startsWith(`${a.getAttribute('href')}?`)
      || hash.startsWith(`${a.getAttribute('href')}/`) && a.getAttribute('href') !== '#/';
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
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

// Every page of the dashboard: the hash it answers and how to get the function that
// shows it.
// A page is one module; adding one is one line here (and, if it has a tab, one link
// in index.html's nav).
//
// The page's function, `show(main, ctx)`, fills `main` and returns `{ title, stop }`: the document's title
// and the function that ends its live updates (called before the next page shows).
// `ctx`: `params` (the pattern's groups, URI-decoded), `query` (the URLSearchParams
// after a `?` in the hash), `onState(state)` (`'live'` or `'retrying'`: the header's
// connection status).

// The overview, where most visits start, comes with the entry; every other page is
// fetched the first time it is shown (`load`), so a first visit does not download
// every page.
import { overview } from './overview.js';

export const ROUTES = [
  { pattern: /^#\/?$/, load: async () => overview },
  { pattern: /^#\/ns\/([^/]+)$/, load: async () => (await import('./namespace.js')).namespace },
  { pattern: /^#\/tap$/, load: async () => (await import('./tap.js')).tap },
  { pattern: /^#\/top$/, load: async () => (await import('./top.js')).top },
  {
    pattern: /^#\/ns\/([^/]+)\/(deploy|sts|ds|pod)\/([^/]+)$/,
    load: async () => (await import('./workload.js')).workload,
  },
];

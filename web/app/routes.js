// Every page of the dashboard: the hash it answers and the function that shows it.
// A page is one module; adding one is one line here (and, if it has a tab, one link
// in index.html's nav).
//
// `show(main, ctx)` fills `main` and returns `{ title, stop }`: the document's title
// and the function that ends its live updates (called before the next page shows).
// `ctx`: `params` (the pattern's groups, URI-decoded), `query` (the URLSearchParams
// after a `?` in the hash), `onState(state)` (`'live'` or `'retrying'`: the header's
// connection status).

import { namespace } from './namespace.js';
import { overview } from './overview.js';
import { tap } from './tap.js';
import { top } from './top.js';
import { workload } from './workload.js';

export const ROUTES = [
  { pattern: /^#\/?$/, show: overview },
  { pattern: /^#\/ns\/([^/]+)$/, show: namespace },
  { pattern: /^#\/tap$/, show: tap },
  { pattern: /^#\/top$/, show: top },
  { pattern: /^#\/ns\/([^/]+)\/(deploy|sts|ds|pod)\/([^/]+)$/, show: workload },
];

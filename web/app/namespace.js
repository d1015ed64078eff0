// The namespace page (`#/ns/NAME`): a placeholder until its workloads table and
// topology graph are built.

import { command, h } from './dom.js';

export function namespace(main, { params: [name] }) {
  main.replaceChildren(h('section', { class: 'page', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title', tabindex: '-1' }, `Namespace ${name}`),
    command(`mesh stat deploy -n ${name}`),
    h('p', {}, 'This namespace’s workloads, topology and traffic are not shown here yet. ',
      h('a', { href: '#/' }, 'Back to the overview'))));
  return { title: name };
}

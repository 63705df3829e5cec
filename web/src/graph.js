// The behaviour graph drawn with cytoscape: filter by domain (edge kind), search, click for evidence.
import cytoscape from 'cytoscape';

const NODE_COLOURS = {
  workload: '#4b5563',
  executable: '#2563eb',
  file: '#059669',
  endpoint: '#d97706',
  capability: '#dc2626',
};

export function drawGraph(container, graph, onSelect) {
  const elements = [];
  for (const n of graph.nodes) {
    elements.push({ group: 'nodes', data: { id: n.id, label: shortLabel(n.label), kind: n.kind, item: n } });
  }
  for (const e of graph.edges) {
    elements.push({
      group: 'edges',
      data: { id: e.id, source: e.source, target: e.target, kind: e.kind, item: e },
    });
  }
  const cy = cytoscape({
    container,
    elements,
    wheelSensitivity: 0.3,
    style: [
      {
        selector: 'node',
        style: {
          label: 'data(label)',
          'font-size': 9,
          'background-color': (el) => NODE_COLOURS[el.data('kind')] ?? '#6b7280',
          width: 14,
          height: 14,
          'text-valign': 'bottom',
          color: '#111827',
        },
      },
      { selector: 'edge', style: { width: 1, 'line-color': '#9ca3af', 'target-arrow-shape': 'triangle', 'target-arrow-color': '#9ca3af', 'curve-style': 'bezier', 'arrow-scale': 0.6 } },
      { selector: '.hidden', style: { display: 'none' } },
      { selector: '.match', style: { 'border-width': 3, 'border-color': '#facc15' } },
      { selector: '.faded', style: { opacity: 0.15 } },
      { selector: ':selected', style: { 'border-width': 3, 'border-color': '#111827', 'line-color': '#111827' } },
    ],
    layout: { name: elements.length > 2000 ? 'grid' : 'cose', animate: false, randomize: false },
  });
  cy.on('tap', 'node, edge', (evt) => onSelect(evt.target.isNode() ? 'node' : 'edge', evt.target.data('item'), graph));
  return cy;
}

// Shows only edges of the chosen kinds, and the nodes they touch (the workload node always).
export function filterKinds(cy, kinds) {
  cy.batch(() => {
    cy.edges().forEach((e) => e.toggleClass('hidden', !kinds.has(e.data('kind'))));
    cy.nodes().forEach((n) => {
      const visible = n.data('kind') === 'workload' || n.connectedEdges().some((e) => !e.hasClass('hidden'));
      n.toggleClass('hidden', !visible);
    });
  });
}

export function search(cy, text) {
  const q = text.trim().toLowerCase();
  cy.batch(() => {
    cy.elements().removeClass('match faded');
    if (!q) return;
    const hits = cy.nodes().filter((n) => n.data('item').label.toLowerCase().includes(q));
    hits.addClass('match');
    cy.elements().not(hits).not(hits.connectedEdges()).addClass('faded');
  });
}

// Paths by their last component (the evidence panel has the whole path): a readable graph.
function shortLabel(label) {
  const base = label.startsWith('/') && label.length > 1 ? label.slice(label.lastIndexOf('/') + 1) || label : label;
  return base.length > 32 ? `…${base.slice(-31)}` : base;
}

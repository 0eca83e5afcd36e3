// The dependency graph: jobs and the data they wait for, laid out left to right by dagre
// (through cytoscape), coloured by each job's last result. With many jobs it shows one job's
// neighbourhood, some levels up and down, rather than the whole world.

import cytoscape from './vendor/cytoscape-3.34.4.esm.min.mjs';
import dagre from './vendor/cytoscape-dagre-4.0.1.min.mjs';
import * as api from './api.js';
import { h, fill, notice, badge, debounce } from './dom.js';
import { relative } from './format.js';
import { setParams } from './route.js';

cytoscape.use(dagre);

const COLOURS = {
  success: ['#dafbe1', '#1a7f37'],
  failure: ['#ffebe9', '#cf222e'],
  fresh: ['#f6f8fa', '#8c959f'],
};

const STYLE = [
  {
    selector: 'node[kind = "job"]',
    style: {
      shape: 'round-rectangle', label: 'data(name)', 'text-valign': 'center', 'font-size': 12,
      width: 'label', height: 30, padding: '10px', 'background-color': 'data(fill)',
      'border-width': 2, 'border-color': 'data(stroke)', color: '#1d2330',
    },
  },
  { selector: 'node[?running]', style: { 'border-style': 'double', 'border-width': 5, 'border-color': '#0969da' } },
  { selector: 'node[?disabled]', style: { opacity: 0.55, 'border-style': 'dashed' } },
  { selector: 'node[?root]', style: { 'border-width': 4, 'font-weight': 'bold' } },
  {
    selector: 'node[kind = "resource"]',
    style: {
      shape: 'tag', label: 'data(name)', 'text-valign': 'center', 'font-size': 11, width: 'label',
      height: 24, padding: '8px', 'background-color': '#fff8c5', 'border-width': 1, 'border-color': '#9a6700',
    },
  },
  {
    selector: 'edge',
    style: {
      width: 1.5, 'line-color': '#8c959f', 'target-arrow-color': '#8c959f',
      'target-arrow-shape': 'triangle', 'curve-style': 'bezier', 'arrow-scale': 0.9,
    },
  },
  { selector: 'edge[kind = "dependsOn"]', style: { 'line-style': 'dashed' } },
  { selector: 'edge[kind = "triggeredBy"]', style: { 'line-style': 'dotted', width: 2 } },
  { selector: ':selected', style: { 'overlay-color': '#1f6feb', 'overlay-opacity': 0.15 } },
];

export function mount(view, { params }) {
  let cy = null;
  const jobInput = h('input', { type: 'search', id: 'graph-job', placeholder: 'A job’s name', value: params.get('job') || '', list: 'graph-jobs' });
  const suggestions = h('datalist', { id: 'graph-jobs' });
  const depth = h('select', { id: 'graph-depth' }, [1, 2, 3, 4, 5].map((d) =>
    h('option', { value: d, selected: String(d) === (params.get('depth') || '2') }, `${d} level${d > 1 ? 's' : ''} up and down`)));
  const canvas = h('div', { id: 'graph' });
  const side = h('div', { class: 'card', id: 'graph-info' });
  const status = h('span', { class: 'sub', id: 'graph-status' });

  async function load() {
    const job = jobInput.value.trim();
    setParams({ job, depth: job ? depth.value : undefined });
    fill(status, 'loading…');
    try {
      const g = await api.graph(job ? { job, depth: depth.value } : {});
      draw(g);
    } catch (e) {
      cy?.destroy();
      cy = null;
      fill(canvas, notice(e.message, 'error'));
      fill(status);
    }
  }

  function draw(g) {
    cy?.destroy();
    cy = null;
    const jobs = g.nodes.filter((n) => n.kind === 'job').length;
    if (!g.nodes.length) {
      fill(canvas, notice(g.truncated
        ? 'There are too many jobs to draw them all: choose a job to see its neighbourhood.'
        : 'No jobs yet.'));
      fill(status);
      return;
    }
    canvas.replaceChildren();
    cy = cytoscape({
      container: canvas,
      elements: [
        ...g.nodes.map((n) => ({ data: nodeData(n, g.job) })),
        ...g.edges.map((e, i) => ({ data: { id: `e${i}`, source: e.from, target: e.to, kind: e.kind, label: e.label } })),
      ],
      style: STYLE,
      layout: { name: 'dagre', rankDir: 'LR', nodeSep: 20, rankSep: 70, animate: false },
      wheelSensitivity: 0.3,
      maxZoom: 2,
    });
    // For tests and the curious: the graph as drawn.
    window.dronGraph = cy;
    cy.on('tap', 'node', (event) => showInfo(event.target.data()));
    cy.on('dbltap', 'node[kind = "job"]', (event) => {
      jobInput.value = event.target.data('name');
      load();
    });
    const resources = g.nodes.length - jobs;
    fill(status, `${jobs} job${jobs === 1 ? '' : 's'}, ${resources} resource${resources === 1 ? '' : 's'}, ${g.edges.length} edges`,
      g.truncated ? ' (cut at the size limit)' : '');
    const root = g.job && cy.getElementById(`j:${g.job}`);
    if (root && root.length) showInfo(root.data());
    else fill(side, h('h2', {}, 'Legend'), legend());
  }

  function showInfo(node) {
    if (node.kind === 'resource') {
      fill(side, h('h2', {}, 'Resource'), h('p', { class: 'mono' }, node.name),
        h('p', {}, 'Waited for by ', node.consumers.join(', '), '.'), legend());
      return;
    }
    const link = `#/job/${encodeURIComponent(node.name)}`;
    fill(side,
      h('h2', {}, h('a', { href: link }, node.name)),
      h('p', {}, badge(node.status), node.runState !== 'idle' ? badge(node.runState) : null, node.disabled ? badge('disabled') : null),
      h('p', {}, `Last success: ${relative(node.lastSuccess) || 'never'}`, h('br'), `Last error: ${relative(node.lastError) || 'never'}`),
      h('p', {}, h('a', { class: 'button', href: link }, 'Open job'), ' ',
        h('button', { onclick: () => { jobInput.value = node.name; load(); } }, 'Centre here')),
      legend());
  }

  const fetchSuggestions = debounce(async () => {
    try {
      const page = await api.jobsPage({ q: jobInput.value.trim(), limit: 10 });
      fill(suggestions, page.jobs.map((j) => h('option', { value: j.name })));
    } catch { /* suggestions are a convenience */ }
  }, 200);
  jobInput.addEventListener('input', fetchSuggestions);
  jobInput.addEventListener('change', load);
  depth.addEventListener('change', load);

  fill(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Dependency graph'), h('span', { class: 'spacer' }), status),
    h('div', { class: 'toolbar' }, jobInput, suggestions, depth,
      h('button', { class: 'primary', onclick: load }, 'Show'),
      h('button', { onclick: () => { jobInput.value = ''; load(); } }, 'Whole graph')),
    h('div', { class: 'graph-layout' }, canvas, side));
  load();
  return () => {
    cy?.destroy();
    if (window.dronGraph === cy) delete window.dronGraph;
  };
}

function nodeData(node, root) {
  const [background, border] = COLOURS[node.status] || ['#fff', '#8c959f'];
  return {
    ...node,
    fill: background,
    stroke: border,
    running: node.runState === 'running',
    root: node.kind === 'job' && node.name === root,
  };
}

function legend() {
  const swatch = (bg, border, style = 'solid') => h('span', { class: 'swatch', style: `background:${bg};border:2px ${style} ${border}` });
  return h('div', { class: 'legend' },
    h('h2', { style: 'margin-top:16px' }, 'Legend'),
    h('div', {}, swatch('#dafbe1', '#1a7f37'), 'last run succeeded'),
    h('div', {}, swatch('#ffebe9', '#cf222e'), 'last run failed'),
    h('div', {}, swatch('#f6f8fa', '#8c959f'), 'never ran'),
    h('div', {}, swatch('#fff', '#0969da', 'double'), 'running now'),
    h('div', {}, swatch('#fff8c5', '#9a6700'), 'data it waits for'),
    h('div', { class: 'sub' }, 'solid edge: parent · dashed: dependsOn · dotted: triggeredBy'),
    h('div', { class: 'sub' }, 'Click a job for details; double-click to centre the graph on it.'));
}

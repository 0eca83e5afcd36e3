// The UI's entry: a hash router (`#/jobs`, `#/job/NAME`, `#/graph?job=NAME`, `#/new`,
// `#/edit/NAME`, `#/cluster`, `#/backfills`) over page modules. Each page's `mount(view, route)` answers a
// function that stops what it started (timers, live tails, requests), called when the
// route changes.

import * as api from './api.js';
import { currentRoute } from './route.js';
import { fill, notice } from './dom.js';
import * as jobs from './jobs.js';
import * as job from './job.js';
import * as form from './form.js';
import * as graph from './graph.js';
import * as cluster from './cluster.js';
import * as backfills from './backfills.js';

const PAGES = [
  [/^\/jobs$/, jobs, 'jobs'],
  [/^\/job\/([^/]+)$/, job, 'jobs'],
  [/^\/new$/, form, 'new'],
  [/^\/edit\/([^/]+)$/, form, 'jobs'],
  [/^\/graph$/, graph, 'graph'],
  [/^\/cluster$/, cluster, 'cluster'],
  [/^\/backfills$/, backfills, 'backfills'],
];

let unmount = () => {};

function route() {
  unmount();
  unmount = () => {};
  const view = document.getElementById('view');
  const hash = location.hash;
  const { path, params } = currentRoute();
  for (const [pattern, page, nav] of PAGES) {
    const match = pattern.exec(path);
    if (!match) continue;
    highlight(nav);
    const name = match[1] ? decodeURIComponent(match[1]) : undefined;
    fill(view);
    unmount = page.mount(view, { name, params, path }) || (() => {});
    // Which URL the page was rendered for (tests wait for it after changing the URL); pages
    // may since have recorded their state in it.
    document.body.dataset.route = hash;
    return;
  }
  fill(view, notice(`No page at ${path}.`, 'error'));
}

function highlight(nav) {
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('active', link.dataset.nav === nav);
  }
}

async function showHealth() {
  const el = document.getElementById('health');
  try {
    const h = await api.health();
    el.className = 'health ok';
    // A follower of a cluster has no shards of its own: it forwards to the leader.
    const parts = [h.status];
    if (h.shards != null) parts.push(`${h.shards} shards`);
    parts.push(`amqp ${h.amqp}`);
    if (h.role && h.role !== 'leader') parts.push(h.leader != null ? `${h.role} of node ${h.leader}` : h.role);
    el.textContent = parts.join(' · ');
  } catch (e) {
    el.className = 'health down';
    el.textContent = e.status ? e.message : 'server unreachable';
  }
}

window.addEventListener('hashchange', route);
route();
showHealth();
setInterval(showHealth, 10000);

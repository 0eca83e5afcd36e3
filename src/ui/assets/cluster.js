// Agents and shards: what each agent offers, uses and has free, and how the jobs and their
// live instances spread over the shards.

import * as api from './api.js';
import { h, fill, card, notice, badge } from './dom.js';
import { count, relative } from './format.js';

const RESOURCES = ['cpus', 'mem', 'disk'];
const REFRESH_MS = 5000;

export function mount(view) {
  const agents = card('Agents');
  const shards = card('Shards');
  fill(view, h('div', { class: 'page-head' }, h('h1', {}, 'Agents and shards')), agents, shards);

  async function refresh() {
    await Promise.all([loadAgents(agents), loadShards(shards)]);
  }
  refresh();
  const timer = setInterval(() => document.visibilityState === 'visible' && refresh(), REFRESH_MS);
  return () => clearInterval(timer);
}

async function loadAgents(el) {
  let answer;
  try {
    answer = await api.agents();
  } catch (e) {
    // Servers without remote agents have no /api/agents.
    const text = e.status === 404 ? 'No agent information: this server does not report agents.' : e.message;
    fill(el, h('h2', {}, 'Agents'), notice(text, e.status === 404 ? 'info' : 'error'));
    el.id = 'agents';
    return;
  }
  el.id = 'agents';
  fill(el, h('h2', {}, 'Agents'),
    answer.agents.length
      ? h('table', {},
        h('thead', {}, h('tr', {}, ['Agent', 'State', 'Last heartbeat', 'Tasks', ...RESOURCES.map((r) => `${r} used / offered`), 'Attributes'].map((t) => h('th', {}, t)))),
        h('tbody', {}, answer.agents.map(agentRow)))
      : notice('No agent is registered.'));
}

function agentRow(agent) {
  const state = { active: 'success', disconnected: 'queued', lost: 'failure' }[agent.state] || 'fresh';
  return h('tr', { dataset: { agent: agent.id } },
    h('td', {}, h('strong', {}, agent.name), agent.local ? h('span', { class: 'sub' }, ' (in the server)') : null,
      h('div', { class: 'sub mono' }, agent.id)),
    h('td', {}, badge(agent.state, state)),
    h('td', {}, agent.lastHeartbeatMs ? relative(new Date(agent.lastHeartbeatMs).toISOString()) : ''),
    h('td', { class: 'num' }, agent.tasks ?? ''),
    RESOURCES.map((r) => usage(agent, r)),
    h('td', { class: 'mono' }, Object.entries(agent.attributes || {}).map(([k, v]) => `${k}=${v}`).join(' ')));
}

function usage(agent, resource) {
  const offered = agent.offered?.[resource] ?? 0;
  const used = agent.used?.[resource] ?? 0;
  const free = agent.free?.[resource] ?? offered - used;
  const share = offered > 0 ? Math.min(100, (100 * used) / offered) : 0;
  return h('td', { title: `${free} free` },
    h('div', {}, `${round(used)} / ${round(offered)}`, h('span', { class: 'sub' }, ` (${round(free)} free)`)),
    h('div', { class: 'bar' }, h('span', { style: `width:${share}%` })));
}

async function loadShards(el) {
  el.id = 'shards';
  try {
    const answer = await api.shards();
    const most = Math.max(1, ...answer.shards.map((s) => s.jobs));
    const total = (key) => answer.shards.reduce((sum, s) => sum + s[key], 0);
    fill(el, h('h2', {}, `Shards (${answer.count})`),
      h('table', {},
        h('thead', {}, h('tr', {}, ['Shard', 'Jobs', '', 'Live instances', 'Timers'].map((t) => h('th', {}, t)))),
        h('tbody', {}, answer.shards.map((s) => h('tr', { dataset: { shard: s.shard } },
          h('td', {}, s.shard),
          h('td', { class: 'num' }, count(s.jobs)),
          h('td', { style: 'width:40%' }, h('div', { class: 'bar' }, h('span', { style: `width:${(100 * s.jobs) / most}%` }))),
          h('td', { class: 'num' }, count(s.live_instances)),
          h('td', { class: 'num' }, count(s.timers))))),
        h('tfoot', {}, h('tr', {}, h('th', {}, 'All'), h('th', { class: 'num' }, count(total('jobs'))), h('th'),
          h('th', { class: 'num' }, count(total('live_instances'))), h('th', { class: 'num' }, count(total('timers')))))));
  } catch (e) {
    fill(el, h('h2', {}, 'Shards'), notice(e.message, 'error'));
  }
}

const round = (n) => (Number.isInteger(n) ? n : Number(n).toFixed(1));

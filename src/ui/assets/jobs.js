// The jobs table: search, filter, sort and pages are computed by the server
// (`GET /api/jobs`), so a page costs the same with ten jobs or a hundred thousand.

import * as api from './api.js';
import { h, fill, badge, debounce, notice } from './dom.js';
import { when, relative, trigger, count, duration } from './format.js';
import { setParams } from './route.js';

const PAGE_SIZE = 50;
const FILTERS = [['', 'All'], ['failing', 'Failing'], ['running', 'Running'], ['disabled', 'Disabled']];
const COLUMNS = [
  { key: 'name', title: 'Name', sort: 'name' },
  { key: 'schedule', title: 'Schedule' },
  { key: 'nextFire', title: 'Next fire', sort: 'nextFire' },
  { key: 'lastSuccess', title: 'Last success', sort: 'lastSuccess' },
  { key: 'lastError', title: 'Last error', sort: 'lastError' },
  { key: 'counts', title: 'Runs ok / failed' },
  { key: 'state', title: 'State' },
  { key: 'owner', title: 'Owner', sort: 'owner' },
];
const REFRESH_MS = 5000;

export function mount(view, { params }) {
  const state = {
    q: params.get('q') || '',
    filter: params.get('filter') || '',
    sort: params.get('sort') || 'name',
    order: params.get('order') || 'asc',
    offset: Number(params.get('offset')) || 0,
  };
  let latest = 0;
  let controller = null;
  const search = h('input', {
    type: 'search', id: 'job-search', placeholder: 'Search name, command or owner…',
    value: state.q, autofocus: true,
  });
  const chips = h('div', { class: 'chips' });
  const head = h('thead');
  const body = h('tbody');
  const total = h('span', { id: 'jobs-total' });
  const timing = h('span', { class: 'sub', id: 'jobs-timing' });
  const prev = h('button', { id: 'prev-page' }, '← Previous');
  const next = h('button', { id: 'next-page' }, 'Next →');

  /** Loads the page; answers that arrive after a newer request are dropped. */
  async function load() {
    const mine = ++latest;
    controller?.abort();
    controller = new AbortController();
    // Defaults stay out of the URL.
    setParams({
      q: state.q,
      filter: state.filter,
      sort: state.sort === 'name' ? undefined : state.sort,
      order: state.order === 'asc' ? undefined : state.order,
      offset: state.offset || undefined,
    });
    const started = performance.now();
    try {
      const page = await api.jobsPage({ ...state, limit: PAGE_SIZE }, controller.signal);
      if (mine !== latest) return;
      render(page, performance.now() - started);
    } catch (e) {
      if (e.name === 'AbortError' || mine !== latest) return;
      fill(body, h('tr', {}, h('td', { colspan: COLUMNS.length }, notice(e.message, 'error'))));
    }
  }

  function render(page, ms) {
    renderHead();
    fill(body, page.jobs.length
      ? page.jobs.map(row)
      : h('tr', {}, h('td', { colspan: COLUMNS.length }, notice(state.q || state.filter ? 'No job matches.' : 'No jobs yet: create one with "New job".'))));
    const first = page.total ? state.offset + 1 : 0;
    const last = state.offset + page.jobs.length;
    fill(total, `${count(first)}–${count(last)} of ${count(page.total)} jobs`);
    fill(timing, `answered in ${duration(ms)}`);
    prev.disabled = state.offset === 0;
    next.disabled = last >= page.total;
  }

  function renderHead() {
    fill(head, h('tr', {}, COLUMNS.map((col) => {
      if (!col.sort) return h('th', {}, col.title);
      const sorted = state.sort === col.sort;
      const classes = ['sortable', sorted && 'sorted', sorted && state.order === 'desc' && 'desc'];
      return h('th', {
        class: classes.filter(Boolean).join(' '),
        dataset: { sort: col.sort },
        onclick: () => {
          // Times read best newest first; names and owners A to Z.
          const firstOrder = col.sort.startsWith('last') ? 'desc' : 'asc';
          state.order = sorted ? (state.order === 'asc' ? 'desc' : 'asc') : firstOrder;
          state.sort = col.sort;
          state.offset = 0;
          load();
        },
      }, col.title);
    })));
    fill(chips, FILTERS.map(([value, label]) => h('button', {
      class: state.filter === value ? 'active' : '',
      dataset: { filter: value },
      onclick: () => { state.filter = value; state.offset = 0; load(); },
    }, label)));
  }

  search.addEventListener('input', debounce(() => {
    state.q = search.value.trim();
    state.offset = 0;
    load();
  }, 200));
  prev.addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); load(); });
  next.addEventListener('click', () => { state.offset += PAGE_SIZE; load(); });

  fill(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'), h('span', { class: 'spacer' }), timing),
    h('div', { class: 'toolbar' }, search, chips),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'jobs' }, head, body),
      h('div', { class: 'pager' }, total, h('span', { class: 'spacer' }), prev, next)));
  renderHead();
  load();
  // Keeps next fires, results and states current without a reload.
  const timer = setInterval(() => document.visibilityState === 'visible' && load(), REFRESH_MS);
  return () => { clearInterval(timer); controller?.abort(); };
}

function row(job) {
  const link = h('a', { href: `#/job/${encodeURIComponent(job.name)}` }, job.name);
  return h('tr', { dataset: { job: job.name } },
    h('td', { class: 'name' }, link, h('div', { class: 'sub mono' }, truncate(job.command, 60))),
    h('td', { title: job.schedule || job.triggeredBy || '' }, trigger(job)),
    timeCell(job.nextFire),
    timeCell(job.lastSuccess),
    timeCell(job.lastError),
    h('td', { class: 'num' }, `${count(job.successCount)} / ${count(job.errorCount)}`),
    h('td', { class: 'state' }, states(job)),
    h('td', {}, job.owner),
  );
}

function timeCell(iso) {
  return h('td', { title: when(iso) }, relative(iso));
}

/** What the State column shows: disabled, running (or queued, or waiting for data), failing,
 * else enabled. */
export function states(job) {
  const shown = [];
  if (job.disabled) shown.push(badge('disabled'));
  if (['running', 'queued', 'waiting'].includes(job.runState)) shown.push(badge(job.runState));
  if (job.status === 'failure') shown.push(badge('failing'));
  if (!shown.length) shown.push(badge('enabled'));
  return shown;
}

function truncate(text, n) {
  return text && text.length > n ? text.slice(0, n - 1) + '…' : text;
}

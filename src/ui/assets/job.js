// One job: its definition, next fire times (DST changes marked), what its instances wait
// for, its runs with a duration chart, the log of any run (followed live while it runs), and
// the actions: run now, kill, enable or disable, backfill, edit, delete.

import * as api from './api.js';
import { h, fill, badge, card, notice } from './dom.js';
import { when, relative, duration, trigger, wallClock } from './format.js';
import { states } from './jobs.js';
import { setParams } from './route.js';
import { backfillDialog } from './backfills.js';

const REFRESH_MS = 2000;
/** Characters of a log kept on screen; the head of a longer one is dropped. */
const LOG_CHARS = 2_000_000;

export function mount(view, { name, params }) {
  const stop = new AbortController();
  const el = {
    head: h('div', { class: 'page-head' }),
    definition: card('Definition'),
    next: card('Next fire times'),
    waiting: h('section', { class: 'card', id: 'waiting', hidden: true }),
    chart: h('div', { id: 'runs-chart' }),
    runs: h('div'),
    log: card('Log'),
  };
  let selected = params.get('run');
  let chart = null;
  let tail = null;
  let job = null;
  let runs = [];

  fill(view,
    el.head,
    h('div', { class: 'grid' }, el.definition, h('div', {}, el.next, el.waiting)),
    card('Runs', el.chart, el.runs),
    el.log);
  fill(el.log, h('h2', {}, 'Log'), notice('Choose a run to see what it printed.'));

  async function refresh() {
    try {
      const [detail, history] = await Promise.all([api.job(name), api.runs(name, 200)]);
      job = detail.job;
      runs = history.runs;
      renderHead(detail);
      renderDefinition(detail);
      renderRuns();
      if (job.dependsOn || detail.live.some((run) => run.state === 'waiting')) {
        renderWaiting(await api.waiting(name));
      } else {
        el.waiting.hidden = true;
      }
    } catch (e) {
      fill(el.head, h('h1', {}, name), notice(e.message, 'error'));
    }
  }

  function renderHead(view) {
    const act = (label, action, attrs = {}) => h('button', {
      ...attrs,
      onclick: async (event) => {
        event.target.disabled = true;
        try { await action(); } catch (e) { alertError(e); }
        event.target.disabled = false;
        refresh();
        loadNext();
      },
    }, label);
    const running = view.live.some((run) => run.state === 'running');
    fill(el.head,
      h('h1', {}, name), h('span', {}, states(statusOf(view))),
      h('span', { class: 'spacer' }),
      act('Run now', () => api.runNow(name), { id: 'run-now', class: 'primary' }),
      act('Kill', () => api.kill(name), { id: 'kill', disabled: !view.live.length || undefined, title: running ? 'kill its running and queued runs' : 'kill its queued runs' }),
      act(job.disabled ? 'Enable' : 'Disable', () => setDisabled(!job.disabled), { id: 'toggle-disabled' }),
      job.schedule && h('button', { id: 'backfill', onclick: () => backfillDialog(name), title: 'run it for past targets' }, 'Backfill'),
      h('a', { class: 'button', href: `#/edit/${encodeURIComponent(name)}`, id: 'edit' }, 'Edit'),
      h('a', { class: 'button', href: `#/graph?job=${encodeURIComponent(name)}` }, 'Graph'),
      h('button', { class: 'danger', id: 'delete', onclick: confirmDelete }, 'Delete'));
  }

  /** Re-submits the job as it is with `disabled` changed (the Chronos way). */
  async function setDisabled(disabled) {
    const current = await api.api(`/scheduler/job/${api.enc(name)}`);
    await api.saveJob({ ...current, disabled });
  }

  function confirmDelete() {
    const dialog = h('dialog', { id: 'confirm-delete' },
      h('h2', {}, `Delete ${name}?`),
      h('p', {}, 'Its runs and history are deleted and running tasks killed. Jobs that run after it are re-wired to its parents.'),
      h('div', { class: 'actions' },
        h('button', { onclick: () => dialog.close() }, 'Cancel'),
        h('button', {
          class: 'danger', id: 'confirm-delete-yes',
          onclick: async () => {
            try {
              await api.remove(name);
              dialog.close();
              location.hash = '#/jobs';
            } catch (e) { alertError(e); }
          },
        }, 'Delete')));
    dialog.addEventListener('close', () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
  }

  function renderDefinition(view) {
    const rows = [
      ['Command', h('code', {}, job.command)],
      ['Runs', trigger(job)],
      job.schedule && ['Schedule', h('code', {}, job.schedule)],
      job.scheduleTimeZone && ['Time zone', job.scheduleTimeZone],
      job.dependsOn && ['Waits for', job.dependsOn.map((t) => h('div', {}, h('code', {}, t)))],
      ['Epsilon', job.epsilon],
      ['Retries', job.retries],
      ['Owner', job.owner || '—'],
      ['Successes', `${job.successCount} (last ${relative(job.lastSuccess) || 'never'})`],
      ['Errors', `${job.errorCount} (last ${relative(job.lastError) || 'never'})`],
      view.parentsSucceeded.length && ['Parents done', view.parentsSucceeded.join(', ')],
    ].filter(Boolean);
    fill(el.definition,
      h('h2', {}, 'Definition'),
      h('dl', { class: 'fields' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('details', {}, h('summary', { class: 'muted' }, 'JSON'), h('pre', { class: 'json' }, JSON.stringify(job, null, 2))));
  }

  async function loadNext() {
    try {
      const next = await api.nextTargets(name, 10);
      if (!next.targets.length) {
        fill(el.next, h('h2', {}, 'Next fire times'), notice(next.message || 'No more targets.'));
        return;
      }
      fill(el.next, h('h2', {}, 'Next fire times'),
        h('ol', { class: 'targets', id: 'next-targets' }, next.targets.map((t) => h('li', {},
          h('span', { class: 'mono' }, wallClock(t.local)), ' ', h('span', { class: 'muted' }, t.abbreviation || ''),
          ' ', h('span', { class: 'sub' }, relative(t.utc)),
          t.offsetChanged ? [' ', badge(`DST change → ${t.offset}`, 'dst')] : null))),
        next.targets.some((t) => t.offsetChanged) ? h('p', { class: 'hint' }, next.dstRule) : null);
    } catch (e) {
      fill(el.next, h('h2', {}, 'Next fire times'), notice(e.message, 'error'));
    }
  }

  function renderWaiting(w) {
    el.waiting.hidden = false;
    const live = w.instances.filter((i) => i.waitingFor.length);
    fill(el.waiting, h('h2', {}, 'Waiting for'),
      live.length
        ? live.map((i) => h('div', {},
          h('div', {}, `Target ${when(i.target)} `, badge(i.state), i.expires ? h('span', { class: 'sub' }, ` expires ${relative(i.expires)}`) : null),
          h('ul', {}, i.waitingFor.map((r) => h('li', { class: 'mono' }, r)))))
        : notice('No instance is waiting for data.'));
  }

  function renderRuns() {
    drawChart(runs);
    if (!runs.length) {
      fill(el.runs, notice('No runs yet.'));
      return;
    }
    fill(el.runs, h('table', { id: 'runs' },
      h('thead', {}, h('tr', {}, ['Target', 'State', 'Cause', 'Attempt', 'Started', 'Duration', 'Exit', 'Message', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, runs.map(runRow))));
  }

  function runRow(run) {
    if (run.kind === 'skipped') {
      return h('tr', { dataset: { state: 'skipped' } },
        h('td', {}, when(run.firstTarget)), h('td', {}, badge('skipped')),
        h('td', { colspan: 6 }, `${run.count} targets until ${when(run.until)}: ${run.message}`), h('td'));
    }
    const ms = run.started && run.ended ? new Date(run.ended) - new Date(run.started) : null;
    const log = run.started
      ? h('a', { class: 'log-link', href: '#', onclick: (e) => { e.preventDefault(); openLog(run); } }, 'log')
      : null;
    return h('tr', { dataset: { state: run.state, task: run.taskId }, class: run.taskId === selected ? 'selected' : '' },
      h('td', { title: run.target }, when(run.target)),
      h('td', {}, badge(run.state)),
      h('td', {}, run.cause),
      h('td', { class: 'num' }, run.attempt),
      h('td', { title: run.started || '' }, relative(run.started)),
      h('td', { class: 'num' }, duration(ms)),
      h('td', { class: 'num' }, run.exitCode ?? ''),
      h('td', {}, run.message || ''),
      h('td', {}, log));
  }

  /** Run durations over time: succeeded runs as a line, the others as red points. */
  function drawChart(runs) {
    const done = runs.filter((r) => r.kind === 'run' && r.started && r.ended).reverse();
    if (!globalThis.uPlot || done.length < 2) {
      chart?.destroy();
      chart = null;
      el.chart.replaceChildren();
      return;
    }
    const x = done.map((r) => new Date(r.target).getTime() / 1000);
    const secs = (r) => (new Date(r.ended) - new Date(r.started)) / 1000;
    const ok = done.map((r) => (r.state === 'succeeded' ? secs(r) : null));
    const bad = done.map((r) => (r.state !== 'succeeded' ? secs(r) : null));
    const data = [x, ok, bad];
    const width = el.chart.clientWidth || 800;
    if (chart && chart.width === width) {
      chart.setData(data);
      return;
    }
    chart?.destroy();
    chart = new globalThis.uPlot({
      width, height: 200,
      series: [
        {},
        { label: 'succeeded (s)', stroke: '#1a7f37', width: 1.5, points: { size: 5 } },
        { label: 'failed (s)', stroke: '#cf222e', paths: () => null, points: { show: true, size: 7, fill: '#cf222e' } },
      ],
      axes: [{}, { label: 'duration (s)' }],
    }, data, el.chart);
  }

  /** Shows a run's output, following it while the run goes on. */
  function openLog(run, stream = 'stdout') {
    selected = run.taskId;
    setParams({ run: run.taskId, stream: stream === 'stdout' ? undefined : stream });
    for (const tr of el.runs.querySelectorAll('tr[data-task]')) {
      tr.classList.toggle('selected', tr.dataset.task === selected);
    }
    tail?.abort();
    tail = new AbortController();
    const pre = h('pre', { class: 'log', id: 'log' });
    const status = h('span', { id: 'log-status', class: 'sub' }, 'loading…');
    const tab = (s) => h('button', { class: s === stream ? 'active' : '', dataset: { stream: s }, onclick: () => openLog(run, s) }, s);
    fill(el.log,
      h('div', { class: 'log-head' }, h('h2', { style: 'margin:0' }, `Log of ${when(run.target)}, attempt ${run.attempt}`),
        h('span', { class: 'tabs' }, tab('stdout'), ' ', tab('stderr')), h('span', { class: 'spacer' }), status),
      pre);
    follow(run.taskId, stream, pre, status, tail.signal);
  }

  async function follow(taskId, stream, pre, status, signal) {
    let offset = 0;
    let text = '';
    while (!signal.aborted && !stop.signal.aborted) {
      const asked = performance.now();
      let part;
      try {
        part = await api.output(name, taskId, stream, offset, true, signal);
      } catch (e) {
        if (e.name !== 'AbortError') fill(status, e.message);
        return;
      }
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      text = (text + part.text).slice(-LOG_CHARS);
      pre.textContent = text;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      offset = part.next;
      if (part.finished) {
        fill(status, text ? 'finished' : 'finished; it printed nothing');
        return;
      }
      fill(status, '● live');
      status.className = 'sub live';
      // The server holds a follow request until output comes; an empty answer that came
      // back at once (the run is between attempts) waits a moment before asking again.
      if (!part.text && performance.now() - asked < 500) await sleep(1000);
    }
  }

  refresh().then(() => {
    const run = runs.find((r) => r.taskId && r.taskId === selected);
    if (run) openLog(run, params.get('stream') || 'stdout');
  });
  loadNext();
  const timer = setInterval(() => document.visibilityState === 'visible' && refresh(), REFRESH_MS);
  return () => {
    clearInterval(timer);
    stop.abort();
    tail?.abort();
    chart?.destroy();
  };
}

/** The fields the State badges read, from a job's detail. */
function statusOf(view) {
  const j = view.job;
  const live = view.live.map((r) => r.state);
  const waitingOnly = live.length > 0 && live.every((state) => state === 'waiting');
  const runState = live.includes('running') ? 'running' : waitingOnly ? 'waiting' : live.length ? 'queued' : 'idle';
  const failing = j.lastError && (!j.lastSuccess || j.lastError >= j.lastSuccess);
  return { disabled: j.disabled, runState, status: failing ? 'failure' : 'success' };
}

function alertError(e) {
  window.alert(e.message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

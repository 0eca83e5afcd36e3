// Backfills and reruns: each with its range, state and progress, per job (the job backfilled,
// then those downstream), and a button to cancel one that runs. The job page starts them
// (`backfillDialog` below).

import * as api from './api.js';
import { h, fill, card, notice, badge } from './dom.js';
import { when } from './format.js';

const REFRESH_MS = 2000;

export function mount(view) {
  const list = card('Backfills');
  list.id = 'backfills';
  fill(view, h('div', { class: 'page-head' }, h('h1', {}, 'Backfills')), list);

  async function refresh() {
    try {
      const answer = await api.backfills();
      fill(list, answer.backfills.length
        ? answer.backfills.map((b) => backfillRow(b, refresh))
        : notice('No backfill yet: start one from a job\'s page.'));
    } catch (e) {
      fill(list, notice(e.message, 'error'));
    }
  }
  refresh();
  const timer = setInterval(() => document.visibilityState === 'visible' && refresh(), REFRESH_MS);
  return () => clearInterval(timer);
}

function backfillRow(b, refresh) {
  const kind = { finished: b.failed ? 'failure' : 'success', cancelled: 'disabled', running: 'running' }[b.state];
  const cancel = b.state === 'running' && h('button', {
    class: 'danger',
    onclick: async (event) => {
      event.target.disabled = true;
      try { await api.cancelBackfill(b.id); } catch (e) { window.alert(e.message); }
      refresh();
    },
  }, 'Cancel');
  return h('div', { class: 'backfill', dataset: { backfill: b.id } },
    h('div', { class: 'page-head' },
      h('h2', {}, h('a', { href: `#/job/${encodeURIComponent(b.job)}` }, b.job), ' ',
        h('span', { class: 'sub mono' }, b.id)),
      badge(b.state, kind),
      h('span', { class: 'sub' }, `${when(b.from)} → ${when(b.to)}, ${b.parallel} at once${b.downstream ? ', with downstream' : ''}`),
      h('span', { class: 'spacer' }),
      cancel),
    h('table', {},
      h('thead', {}, h('tr', {}, ['Job', 'Progress', 'Succeeded', 'Failed', 'Running', 'Waiting', 'Upstream failed', 'Left alone'].map((t) => h('th', {}, t)))),
      h('tbody', {}, b.jobs.map((j) => h('tr', { dataset: { job: j.job } },
        h('td', {}, j.job, j.upstream.length ? h('div', { class: 'sub' }, `after ${j.upstream.join(', ')}`) : null),
        h('td', { style: 'width:30%' }, progress(j)),
        h('td', { class: 'num' }, j.succeeded),
        h('td', { class: 'num', title: j.failedTargets.join('\n') }, j.failed),
        h('td', { class: 'num' }, j.running),
        h('td', { class: 'num' }, j.waiting),
        h('td', { class: 'num' }, j.upstreamFailed),
        h('td', { class: 'num' }, j.leftAlone))))));
}

function progress(j) {
  const done = j.succeeded + j.failed + j.upstreamFailed;
  const share = j.total > 0 ? (100 * done) / j.total : 100;
  return h('div', { class: 'bar', title: `${done} of ${j.total}` }, h('span', { style: `width:${share}%` }));
}

/** The job page's "Backfill" dialog: a range, parallel, downstream; on to the backfills page. */
export function backfillDialog(name) {
  const input = (id, attrs) => h('input', { id, ...attrs });
  const today = new Date();
  today.setUTCHours(0, 0, 0, 0);
  const weekAgo = new Date(today.getTime() - 7 * 86_400_000);
  const fields = {
    from: input('backfill-from', { type: 'text', value: weekAgo.toISOString().replace('.000', '') }),
    to: input('backfill-to', { type: 'text', value: new Date(today.getTime() - 86_400_000).toISOString().replace('.000', '') }),
    parallel: input('backfill-parallel', { type: 'number', min: 1, max: 1000, value: 1 }),
    downstream: input('backfill-downstream', { type: 'checkbox' }),
    rerunSucceeded: input('backfill-rerun', { type: 'checkbox' }),
  };
  const error = h('p', { class: 'notice notice-error', hidden: true });
  const row = (label, field) => h('label', { class: 'dialog-row' }, h('span', {}, label), field);
  const dialog = h('dialog', { id: 'backfill-dialog' },
    h('h2', {}, `Backfill ${name}`),
    h('p', { class: 'sub' }, 'Runs the job for each of its targets from → to (RFC 3339, both included), oldest first, each with that logical time.'),
    row('From', fields.from), row('To', fields.to), row('At once', fields.parallel),
    row('Jobs downstream too', fields.downstream), row('Rerun successes', fields.rerunSucceeded),
    error,
    h('div', { class: 'actions' },
      h('button', { onclick: () => dialog.close() }, 'Cancel'),
      h('button', {
        class: 'primary', id: 'backfill-start',
        onclick: async () => {
          try {
            await api.backfill(name, {
              from: fields.from.value.trim(),
              to: fields.to.value.trim(),
              parallel: Number(fields.parallel.value) || 1,
              downstream: fields.downstream.checked,
              rerunSucceeded: fields.rerunSucceeded.checked,
            });
            dialog.close();
            location.hash = '#/backfills';
          } catch (e) {
            error.hidden = false;
            error.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
          }
        },
      }, 'Start')));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// New and edit job: a form for the common fields, and the job's other fields as raw JSON.
// The server validates; an error naming a field is shown beside that field (or beside the
// raw JSON when the form has no such input).

import * as api from './api.js';
import { h, fill, notice, debounce } from './dom.js';
import { relative, wallClock } from './format.js';

const TRIGGERS = [['schedule', 'On a schedule'], ['parents', 'After other jobs'], ['event', 'On data events']];
/** Fields the form edits; the rest of the job's JSON goes in the raw JSON box. */
const FORM_FIELDS = ['name', 'command', 'schedule', 'scheduleTimeZone', 'parents', 'triggeredBy',
  'dependsOn', 'epsilon', 'retries', 'owner', 'disabled', 'concurrent'];
/** Read-only counters the server adds to a job; never sent back. */
const COUNTERS = ['successCount', 'errorCount', 'lastSuccess', 'lastError'];

export function mount(view, { name }) {
  const editing = name !== undefined;
  fill(view, notice('Loading…'));
  const loaded = editing ? api.api(`/scheduler/job/${api.enc(name)}`) : Promise.resolve(null);
  loaded.then((job) => render(view, job), (e) => fill(view, notice(e.message, 'error')));
}

function render(view, job) {
  const editing = job !== null;
  const initial = job || { schedule: 'R//PT1H', epsilon: 'PT60S', retries: 2, parents: [] };
  const kind = initial.triggeredBy ? 'event' : (initial.parents || []).length ? 'parents' : 'schedule';
  const inputs = {};
  const errors = {};
  const input = (field, attrs = {}) => {
    inputs[field] = h(attrs.rows ? 'textarea' : 'input', { name: field, type: attrs.rows ? undefined : 'text', ...attrs });
    return inputs[field];
  };
  const row = (label, field, control, hint) => {
    errors[field] = h('div', { class: 'field-error', dataset: { for: field } });
    return [h('label', { class: 'key', for: `f-${field}` }, label),
      h('div', { class: 'control', dataset: { field } }, control, hint ? h('div', { class: 'hint' }, hint) : null, errors[field])];
  };
  const kindSelect = h('select', { name: 'kind' }, TRIGGERS.map(([v, label]) => h('option', { value: v, selected: v === kind }, label)));
  const preview = h('div', { class: 'hint', id: 'schedule-preview' });
  const extra = { ...initial };
  for (const field of [...FORM_FIELDS, ...COUNTERS]) delete extra[field];

  const form = h('form', { class: 'job-form', id: 'job-form', novalidate: true },
    row('Name', 'name', input('name', { id: 'f-name', value: initial.name || '', readonly: editing, required: true }),
      editing ? 'A job is renamed by creating a new one.' : 'Letters, digits, ".", "_" and "-".'),
    row('Command', 'command', input('command', { id: 'f-command', rows: 2 }), 'Run with /bin/sh -c.'),
    row('Runs', 'kind', kindSelect),
    row('Schedule', 'schedule', input('schedule', { id: 'f-schedule', value: initial.schedule || '', placeholder: 'R//PT1H or 0 6 * * *' }),
      [h('span', {}, 'An ISO 8601 repeating interval (R/start/period) or a cron expression. '), preview]),
    row('Time zone', 'scheduleTimeZone', input('scheduleTimeZone', { id: 'f-scheduleTimeZone', value: initial.scheduleTimeZone || '', placeholder: 'UTC' })),
    row('Parents', 'parents', input('parents', { id: 'f-parents', value: (initial.parents || []).join(', '), placeholder: 'extract, load' }),
      'Runs once each of these has succeeded.'),
    row('Triggered by', 'triggeredBy', input('triggeredBy', { id: 'f-triggeredBy', value: initial.triggeredBy || '', placeholder: 'products:*' }),
      'Runs on each event for a matching resource.'),
    row('Waits for', 'dependsOn', input('dependsOn', { id: 'f-dependsOn', rows: 2, placeholder: 'hive:users/ds={TODAY}' }),
      'Resources each run waits for, one per line.'),
    row('Epsilon', 'epsilon', input('epsilon', { id: 'f-epsilon', value: initial.epsilon || '' }), 'How late a target may start, e.g. PT60S.'),
    row('Retries', 'retries', input('retries', { id: 'f-retries', value: initial.retries ?? '' })),
    row('Owner', 'owner', input('owner', { id: 'f-owner', value: initial.owner || '' }), 'Mail addresses told of failures, comma-separated.'),
    row('', 'flags', h('div', { class: 'checks' },
      h('label', {}, h('input', { type: 'checkbox', name: 'disabled', checked: !!initial.disabled }), ' Disabled'),
      h('label', {}, h('input', { type: 'checkbox', name: 'concurrent', checked: !!initial.concurrent }), ' Concurrent runs'))),
    row('Other fields (JSON)', 'extra', input('extra', { id: 'f-extra', rows: 8 }),
      'Any other field of the job, e.g. {"maxCompletionTime": 60000, "environmentVariables": [{"name": "X", "value": "1"}]}. ' +
      'A variable with "secret": true shows its value as "<secret>": leave that to keep the value.'),
    h('div', { class: 'field-error', id: 'form-error', style: 'grid-column: 2' }),
    h('div', { class: 'form-actions' },
      h('button', { type: 'submit', class: 'primary', id: 'save-job' }, editing ? 'Save' : 'Create job'),
      h('a', { class: 'button', href: editing ? `#/job/${encodeURIComponent(initial.name)}` : '#/jobs' }, 'Cancel')));
  // Textareas take their value as a property, not an attribute.
  inputs.command.value = initial.command || '';
  inputs.dependsOn.value = (initial.dependsOn || []).join('\n');
  inputs.extra.value = JSON.stringify(extra, null, 2);

  const showKind = () => {
    const k = kindSelect.value;
    const visible = { schedule: k === 'schedule', scheduleTimeZone: k === 'schedule', parents: k === 'parents', triggeredBy: k === 'event' };
    for (const [field, shown] of Object.entries(visible)) {
      form.querySelector(`[data-field="${field}"]`).previousElementSibling.hidden = !shown;
      form.querySelector(`[data-field="${field}"]`).hidden = !shown;
    }
  };
  kindSelect.addEventListener('change', showKind);
  showKind();

  const updatePreview = debounce(async () => {
    const schedule = inputs.schedule.value.trim();
    if (!schedule) { fill(preview); return; }
    try {
      const p = await api.preview(schedule, inputs.scheduleTimeZone.value.trim() || undefined, 3);
      fill(preview, 'Next: ', p.targets.map((t) => `${wallClock(t.local)} ${t.abbreviation} (${relative(t.utc)})`).join(', '));
      showError('schedule', null);
      showError('scheduleTimeZone', null);
    } catch (e) {
      fill(preview);
      if (e.field === 'schedule' || e.field === 'timeZone') showError(e.field === 'timeZone' ? 'scheduleTimeZone' : 'schedule', e.message);
    }
  }, 300);
  inputs.schedule.addEventListener('input', updatePreview);
  inputs.scheduleTimeZone.addEventListener('input', updatePreview);
  updatePreview();

  function showError(field, message) {
    for (const [f, el] of Object.entries(errors)) {
      if (field === undefined || f === field) fill(el, f === field && message ? message : '');
    }
    for (const [f, el] of Object.entries(inputs)) {
      if (field === undefined || f === field) el.classList.toggle('invalid', f === field && !!message);
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(undefined, null);
    fill(form.querySelector('#form-error'));
    let json;
    try {
      json = collect(form, inputs, kindSelect.value);
    } catch (e) {
      showError('extra', e.message);
      return;
    }
    const save = form.querySelector('#save-job');
    save.disabled = true;
    try {
      await api.saveJob(json);
      location.hash = `#/job/${encodeURIComponent(json.name)}`;
    } catch (e) {
      const field = e.field && (errors[e.field] ? e.field : 'extra');
      if (field) {
        showError(field, field === e.field ? e.message : `${e.field}: ${e.message}`);
        inputs[field]?.focus();
      } else {
        fill(form.querySelector('#form-error'), e.message);
      }
    } finally {
      save.disabled = false;
    }
  });

  fill(view,
    h('div', { class: 'page-head' }, h('h1', {}, editing ? `Edit ${initial.name}` : 'New job')),
    h('section', { class: 'card' }, form));
  (editing ? inputs.command : inputs.name).focus();
}

/** The job JSON to submit: the raw JSON's fields, overridden by the form's. */
function collect(form, inputs, kind) {
  let extra = {};
  const raw = inputs.extra.value.trim();
  if (raw) {
    try {
      extra = JSON.parse(raw);
    } catch (e) {
      throw new Error(`not JSON: ${e.message}`);
    }
    if (typeof extra !== 'object' || Array.isArray(extra) || extra === null) throw new Error('must be a JSON object');
  }
  const text = (field) => inputs[field].value.trim();
  const list = (value, separator) => value.split(separator).map((s) => s.trim()).filter(Boolean);
  const json = { ...extra, name: text('name'), command: inputs.command.value.trim() };
  if (kind === 'schedule') {
    json.schedule = text('schedule');
    if (text('scheduleTimeZone')) json.scheduleTimeZone = text('scheduleTimeZone');
  } else if (kind === 'parents') {
    json.parents = list(text('parents'), ',');
  } else {
    json.triggeredBy = text('triggeredBy');
  }
  const dependsOn = list(inputs.dependsOn.value, '\n');
  if (dependsOn.length) json.dependsOn = dependsOn;
  if (text('epsilon')) json.epsilon = text('epsilon');
  // A number when it is one; otherwise sent as typed, for the server to name the field.
  if (text('retries')) json.retries = /^-?\d+$/.test(text('retries')) ? Number(text('retries')) : text('retries');
  json.owner = text('owner');
  json.disabled = form.elements.disabled.checked;
  json.concurrent = form.elements.concurrent.checked;
  return json;
}

// Times, durations and schedules in words.

/** `2026-11-23 20:15:03` in the browser's time zone, or an empty string. */
export function when(iso) {
  if (!iso) return '';
  const t = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

/** `2027-03-28 03:00:00` from an RFC 3339 local time with its offset, as the server writes it. */
export function wallClock(local) {
  return local ? local.slice(0, 19).replace('T', ' ') : '';
}

/** `3 min ago`, `in 12 s`: how far a time is from now. */
export function relative(iso, now = Date.now()) {
  if (!iso) return '';
  const ms = new Date(iso).getTime() - now;
  const words = duration(Math.abs(ms));
  if (Math.abs(ms) < 1000) return 'now';
  return ms < 0 ? `${words} ago` : `in ${words}`;
}

/** `850 ms`, `2.2 s`, `12 s`, `3 min`, `2 h 5 min`, `3 d 4 h`. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 24) return `${hours} h${min % 60 ? ` ${min % 60} min` : ''}`;
  const days = Math.floor(hours / 24);
  if (days >= 365) return `${Math.floor(days / 365.2425)} years`;
  return `${days} d${hours % 24 ? ` ${hours % 24} h` : ''}`;
}

/** 100000 → `100,000`. */
export const count = (n) => Number(n).toLocaleString('en-US');

/** A job's trigger in words: its schedule, its parents, or the events it runs on. */
export function trigger(job) {
  if (job.triggeredBy) return `on each event ${job.triggeredBy}`;
  if (job.parents && job.parents.length) return `after ${job.parents.join(', ')}`;
  if (!job.schedule) return '';
  const zone = job.scheduleTimeZone && job.scheduleTimeZone !== 'UTC' ? ` (${job.scheduleTimeZone})` : '';
  return schedule(job.schedule) + zone;
}

/** An ISO 8601 repeating interval or a cron expression in words. */
export function schedule(text) {
  if (/^r/i.test(text)) return repeatingInterval(text);
  const cron = globalThis.cronstrue;
  if (!cron) return text;
  try {
    return cron.toString(text, { use24HourTimeFormat: true, verbose: false }).replace(/^A/, 'a');
  } catch {
    return text;
  }
}

const UNITS = [
  ['Y', 'year'], ['M', 'month'], ['W', 'week'], ['D', 'day'],
  ['H', 'hour'], ['TM', 'minute'], ['S', 'second'],
];

/** `R//PT10S` → `every 10 seconds`; `R5/2026-01-01T06:00:00Z/P1D` → `5 times, every day at 06:00`. */
function repeatingInterval(text) {
  const [repeat, start, period] = text.split('/');
  if (period === undefined) return text;
  const match = /^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:([\d.,]+)H)?(?:([\d.,]+)M)?(?:([\d.,]+)S)?)?$/i
    .exec(period);
  if (!match) return text;
  const parts = UNITS
    .map(([, unit], i) => [Number(String(match[i + 1] || '0').replace(',', '.')), unit])
    .filter(([n]) => n > 0);
  let words = parts.length === 1 && parts[0][0] === 1
    ? `every ${parts[0][1]}`
    : 'every ' + parts.map(([n, unit]) => `${n} ${unit}${n === 1 ? '' : 's'}`).join(' ');
  const calendar = parts.every(([, unit]) => ['year', 'month', 'week', 'day'].includes(unit));
  const clock = /T(\d\d:\d\d)/.exec(start || '');
  if (calendar && clock) words += ` at ${clock[1]}`;
  const times = /^R(\d+)$/i.exec(repeat);
  if (times) words = `${times[1]} time${times[1] === '1' ? '' : 's'}, ${words}`;
  return words;
}

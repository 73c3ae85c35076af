'use strict';
// `node scheduler.js`: one BullMQ job scheduler per monitor, `every` = the monitor's interval.
//
// Upserts PEER_MONITORS schedulers (ids bench-000000 ...) on queue PEER_QUEUE, prints one JSON
// line ({"upserted", "seconds", "first_slot_ms", "last_slot_ms"}) and exits: in BullMQ the
// next job of a scheduler is created by the Worker that takes the current one, so nothing
// has to keep running here. PEER_STAY=1 keeps the process (and its Queue) open until SIGTERM.
//
// Phases: BullMQ starts an `every` scheduler at the upsert time (or at `startDate`) and then
// keeps the grid startDate + k * every (a scheduler that falls behind skips to the next slot
// of that grid). PEER_PHASES picks startDate: the first slot at or after `base` (one second
// from now plus 0.5 ms per monitor, so every upsert is done before its first slot) whose
// offset in the interval is:
//   crc32 (default)  crc32(monitor id) % every, exactly Vigil's phase (scheduler/schedule.py),
//                    so both systems get the same load, slot for slot;
//   even             i * every / N, perfectly even;
//   none             no startDate: BullMQ's own default, every monitor starts at its upsert
//                    time, i.e. nearly all at once (a thundering herd every interval).

const zlib = require('node:zlib');
const { Queue } = require('bullmq');
const { config, connection, monitorId, onStop, run } = require('./common');

const BATCH = 500; // upserts in flight at once

function firstSlot(id, i, base) {
  const every = config.intervalMs;
  const phase = config.phases === 'even'
    ? Math.floor((i * every) / config.monitors)
    : zlib.crc32(id) % every;
  return base + ((((phase - base) % every) + every) % every);
}

async function main() {
  if (!['crc32', 'even', 'none'].includes(config.phases)) {
    console.error(`PEER_PHASES: expected crc32, even or none, got ${config.phases}`);
    process.exit(2);
  }
  const conn = connection();
  const queue = new Queue(config.queue, { connection: conn });
  await queue.waitUntilReady();
  const t0 = Date.now();
  // First slots start after a lead (1 s + 0.5 ms per monitor), so every upsert is done
  // before its first slot: a startDate already past would start the grid at the upsert time.
  const base = t0 + 1000 + Math.ceil(config.monitors / 2);
  let first = Infinity;
  let last = -Infinity;
  for (let start = 0; start < config.monitors; start += BATCH) {
    const batch = [];
    for (let i = start; i < Math.min(config.monitors, start + BATCH); i += 1) {
      const id = monitorId(i);
      const repeat = { every: config.intervalMs };
      if (config.phases !== 'none') {
        repeat.startDate = firstSlot(id, i, base);
        first = Math.min(first, repeat.startDate);
        last = Math.max(last, repeat.startDate);
      }
      batch.push(queue.upsertJobScheduler(id, repeat, {
        name: 'http',
        data: { monitor_id: id, url: `${config.targetUrl}${id}`, timeout_ms: config.timeoutMs },
        // Completed jobs are deleted at once (the result is on PEER_RESULTS_STREAM); failed
        // ones are kept up to 1,000, as a production queue would.
        opts: { removeOnComplete: true, removeOnFail: 1000 },
      }));
    }
    await Promise.all(batch);
  }
  const seconds = (Date.now() - t0) / 1000;
  console.log(JSON.stringify({
    upserted: config.monitors, seconds,
    phases: config.phases, base_ms: base,
    first_slot_ms: Number.isFinite(first) ? first : null,
    last_slot_ms: Number.isFinite(last) ? last : null,
  }));
  if (process.env.PEER_STAY === '1') {
    await new Promise((resolve) => onStop(resolve));
  }
  await queue.close();
  await conn.quit();
}

run(main);

'use strict';
// `node worker.js`: a BullMQ Worker with concurrency PEER_CONCURRENCY that performs each
// monitor's HTTP GET (a fresh connection per check: agent false) and returns the result as
// the job's return value: monitor_id, scheduled_ms, started_ms, checked_ms, outcome
// (up | down | error | timeout), status, latency_ms, worker. BullMQ stores nothing of it
// (removeOnComplete) but carries it in the job's `completed` event, which events.js records:
// the worker's hot path is BullMQ's own (take the job, run it, moveToFinished), nothing more.
//
// scheduled_ms is the slot the job scheduler planned: job.timestamp + job.opts.delay.
// A scheduler's job is created (by upsertJobScheduler for the first one, then by the Worker
// that takes the previous one, in the updateJobScheduler Lua script) with timestamp = the
// creation time `now` and delay = nextMillis - now, where nextMillis is the slot on the grid
// startDate + k * every; so timestamp + delay = nextMillis, the planned time, not the time the
// job was created or picked up. job.delay itself cannot be used: when the delayed job is
// promoted to waiting, moveToActive's Lua sets the hash's `delay` to 0, while opts.delay keeps
// the value it was created with. The job id, "repeat:<scheduler id>:<nextMillis>", carries
// the same number; PEER_CHECK_IDS=1 makes the worker verify that the two agree.
// checked_ms is when the GET ended, before BullMQ's moveToFinished marks the job completed.
//
// SIGTERM: stop taking jobs, let the running ones finish (worker.close()), print
// {"completed": n} (the Worker's own 'completed' events, a counter: bench/compare.py checks
// that events.js recorded as many), exit 0.

const http = require('node:http');
const { Worker } = require('bullmq');
const { config, connection, onStop, run } = require('./common');

const checkIds = process.env.PEER_CHECK_IDS === '1';

function get(url, timeoutMs) {
  // One GET on a fresh connection; resolves {outcome, status}. Never rejects.
  return new Promise((resolve) => {
    let settled = false;
    const done = (value) => {
      if (!settled) {
        settled = true;
        resolve(value);
      }
    };
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let read = 0;
      res.on('data', (chunk) => {
        read += chunk.length;
        if (read > config.bodyCap) res.destroy(); // bodies read up to a cap, as Vigil's
      });
      const finish = () => done({
        outcome: res.statusCode === 200 ? 'up' : 'down', status: res.statusCode,
      });
      res.on('end', finish);
      res.on('close', finish);
      res.on('error', () => done({ outcome: 'error', status: res.statusCode }));
    });
    req.on('timeout', () => {
      req.destroy();
      done({ outcome: 'timeout', status: 0 });
    });
    req.on('error', (err) => done({ outcome: 'error', status: 0, error: err.code || err.message }));
  });
}

async function main() {
  let mismatches = 0;
  let completed = 0;
  const worker = new Worker(config.queue, async (job) => {
    const started = Date.now();
    const scheduled = job.timestamp + job.opts.delay;
    if (checkIds && !String(job.id).endsWith(`:${scheduled}`)) {
      mismatches += 1;
      console.error(`planned time ${scheduled} does not match job id ${job.id}`);
    }
    const { url, timeout_ms: timeoutMs, monitor_id: monitorId } = job.data;
    const res = await get(url, timeoutMs);
    const checked = Date.now();
    return {
      monitor_id: monitorId, scheduled_ms: scheduled, started_ms: started, checked_ms: checked,
      outcome: res.outcome, status: res.status, latency_ms: checked - started,
      worker: config.workerId,
    };
  }, {
    connection: connection(),
    concurrency: config.concurrency,
    removeOnComplete: { count: 0 },
    removeOnFail: { count: 1000 },
  });
  worker.on('completed', () => { completed += 1; });
  worker.on('error', (err) => console.error(`worker error: ${err.message}`));
  await worker.waitUntilReady();
  console.log(JSON.stringify({ worker: config.workerId, concurrency: config.concurrency, ready: true }));
  const stop = async () => {
    await worker.close();
    console.log(JSON.stringify({ completed, ...(checkIds ? { id_mismatches: mismatches } : {}) }));
    process.exit(0);
  };
  onStop(stop);
}

run(main);

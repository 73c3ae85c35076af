'use strict';
// `node worker.js`: a BullMQ Worker with concurrency PEER_CONCURRENCY that performs each
// monitor's HTTP GET (a fresh connection per check: agent false) and records the result with
// XADD on PEER_RESULTS_STREAM: monitor_id, job_id, scheduled_ms, started_ms, finished_ms,
// outcome (up | down | error | timeout), status, latency_ms, worker.
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
//
// SIGTERM: stop taking jobs, let the running ones finish (worker.close()), exit 0.

const http = require('node:http');
const { Worker } = require('bullmq');
const { config, connection } = require('./common');

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
  const results = connection();
  let mismatches = 0;
  const worker = new Worker(config.queue, async (job) => {
    const started = Date.now();
    const scheduled = job.timestamp + job.opts.delay;
    if (checkIds && !String(job.id).endsWith(`:${scheduled}`)) {
      mismatches += 1;
      console.error(`planned time ${scheduled} does not match job id ${job.id}`);
    }
    const { url, timeout_ms: timeoutMs, monitor_id: monitorId } = job.data;
    const res = await get(url, timeoutMs);
    const finished = Date.now();
    await results.xadd(config.results, '*',
      'monitor_id', monitorId, 'job_id', job.id, 'scheduled_ms', scheduled,
      'started_ms', started, 'finished_ms', finished, 'outcome', res.outcome,
      'status', res.status, 'latency_ms', finished - started, 'worker', config.workerId);
  }, {
    connection: connection(),
    concurrency: config.concurrency,
    removeOnComplete: { count: 0 },
    removeOnFail: { count: 1000 },
  });
  worker.on('error', (err) => console.error(`worker error: ${err.message}`));
  await worker.waitUntilReady();
  console.log(JSON.stringify({ worker: config.workerId, concurrency: config.concurrency, ready: true }));
  const stop = async () => {
    await worker.close();
    await results.quit();
    if (checkIds) console.log(JSON.stringify({ id_mismatches: mismatches }));
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

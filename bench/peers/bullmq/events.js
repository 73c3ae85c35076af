'use strict';
// `node events.js`: records each job's `completed` event, as BullMQ's users see a job finish
// (a QueueEvents listener: BullMQ's API for watching a queue from outside its workers), with
// XADD on PEER_RESULTS_STREAM: monitor_id, job_id, scheduled_ms, started_ms, checked_ms,
// finished_ms, received_ms, outcome, status, latency_ms, worker.
//
// finished_ms is the `completed` event's stream id: Redis's clock when moveToFinished (the Lua
// script that marks the job completed and removes it) XADDed the event, i.e. the moment the
// result is in Redis for anyone to read; Vigil's result is timed the same way (the id of its
// entry in the results stream). received_ms is when this listener got the event (the XREAD
// BLOCK's delivery), so received_ms - finished_ms is what a QueueEvents user waits on top.
// The other fields are the job's return value (worker.js).
//
// Why a QueueEvents process and not the Worker's own 'completed' event: that one fires in the
// worker process after moveToFinished returns and only for its own jobs; recording there would
// put the XADD back into the worker's event loop, the hot path being measured. QueueEvents
// costs a process and one XREAD per batch of events, on a stream BullMQ writes anyway.
//
// It reads from the stream's start (lastEventId 0-0), so it misses nothing written before its
// first XREAD. BullMQ trims the events stream to about 10,000 entries (opts.maxLenEvents): a
// listener further behind than that loses events, which bench/compare.py detects by comparing
// what was recorded with the workers' counts. SIGTERM: stop, flush, print
// {"received": n}, exit 0.

const { QueueEvents } = require('bullmq');
const Redis = require('ioredis');
const { config, connection, onStop, run } = require('./common');

async function main() {
  // Auto-pipelining: the XADDs for one XREAD's batch of events share a round trip.
  const results = new Redis(config.redisUrl, { enableAutoPipelining: true });
  const events = new QueueEvents(config.queue, { connection: connection(), lastEventId: '0-0' });
  let received = 0;
  events.on('completed', ({ jobId, returnvalue: r }, id) => {
    received += 1;
    results.xadd(config.results, '*',
      'monitor_id', r.monitor_id, 'job_id', jobId, 'scheduled_ms', r.scheduled_ms,
      'started_ms', r.started_ms, 'checked_ms', r.checked_ms,
      'finished_ms', id.slice(0, id.indexOf('-')), 'received_ms', Date.now(),
      'outcome', r.outcome, 'status', r.status, 'latency_ms', r.latency_ms, 'worker', r.worker)
      .catch((err) => console.error(`xadd failed: ${err.message}`));
  });
  events.on('error', (err) => console.error(`queue events error: ${err.message}`));
  await events.waitUntilReady();
  console.log(JSON.stringify({ listener: 'completed', ready: true }));
  const stop = async () => {
    await events.close();
    await results.quit(); // after the XADDs already sent
    console.log(JSON.stringify({ received }));
    process.exit(0);
  };
  onStop(stop);
}

run(main);

// Graphile Worker's side of `make bench` (tests/examples/queue_throughput.rs): the same measures as ours on the
// same Postgres, with no-op jobs, in one of two configurations: `unbatched` (its defaults) or `batched` (the
// settings of its performance page: a local queue of 500, completions batched).
//
//   node bench.js queue   <database url> <jobs>                          migrate, then add the jobs (add_jobs)
//   node bench.js work    <database url> <unbatched|batched> <concurrency> run no-op jobs until SIGTERM, then
//                                                                       print {jobs, first, last} (epoch ms)
//   node bench.js latency <database url> <unbatched|batched> <jobs>      add_job -> task start, one at a time
//
// Each prints one JSON object.
const { run, makeWorkerUtils, runMigrations } = require("graphile-worker");
const { Logger } = require("@graphile/logger");
const { performance } = require("node:perf_hooks");

const [command, connectionString, ...rest] = process.argv.slice(2);
const quiet = { logger: new Logger(() => () => {}) };
const now = () => performance.timeOrigin + performance.now();

function preset(mode, concurrency) {
  const worker = { connectionString, concurrentJobs: concurrency, maxPoolSize: concurrency + 1 };
  if (mode === "batched") {
    Object.assign(worker, { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 });
  }
  return { worker };
}

async function queue(jobs) {
  await runMigrations({ connectionString, ...quiet });
  const utils = await makeWorkerUtils({ connectionString, ...quiet });
  for (let done = 0; done < jobs; done += 10000) {
    const batch = Array.from({ length: Math.min(10000, jobs - done) }, (_, i) => ({
      identifier: "noop",
      payload: { i: done + i },
    }));
    await utils.addJobs(batch);
  }
  await utils.release();
  return { queued: jobs };
}

async function work(mode, concurrency) {
  let jobs = 0;
  let first = null;
  let last = null;
  const runner = await run({
    preset: preset(mode, concurrency),
    taskList: {
      noop: async () => {
        const t = now();
        if (first === null) first = t;
        last = t;
        jobs++;
      },
    },
    ...quiet,
  });
  console.log(JSON.stringify({ ready: true }));
  await new Promise((resolve) => process.on("SIGTERM", resolve));
  await runner.stop();
  return { jobs, first, last };
}

async function latency(mode, jobs) {
  await runMigrations({ connectionString, ...quiet });
  const utils = await makeWorkerUtils({ connectionString, ...quiet });
  let started;
  const runner = await run({
    preset: preset(mode, 4),
    taskList: { probe: async () => started(performance.now()) },
    ...quiet,
  });
  const milliseconds = [];
  for (let i = 0; i < jobs; i++) {
    const begun = new Promise((r) => (started = r));
    const before = performance.now();
    await utils.addJob("probe", { i });
    milliseconds.push((await begun) - before);
  }
  await runner.stop();
  await utils.release();
  return { milliseconds };
}

(async () => {
  let result;
  if (command === "queue") result = await queue(Number(rest[0]));
  else if (command === "work") result = await work(rest[0], Number(rest[1]));
  else if (command === "latency") result = await latency(rest[0], Number(rest[1]));
  else throw new Error(`unknown command ${command}`);
  console.log(JSON.stringify(result));
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

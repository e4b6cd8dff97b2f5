#!/usr/bin/env node
// Runs ONNX models through ONNX Runtime (npm onnxruntime-node, CPU) and compares their
// outputs with expected ones.
//
// Usage: NODE_PATH=<node_modules> node tests/onnx/ort_check.js DIR
//   (NODE_PATH: the last line printed by scripts/fetch_onnxruntime.sh.)
// For each DIR/*.json sidecar
//   {"model": "name.onnx", "input": "name.input.f32", "input_shape": [16, 784],
//    "expected": "name.expected.f32", "output_shape": [16, 10], "tolerance": 1e-5,
//    "fixed_batch": false}
// (paths relative to DIR; .f32 files raw little-endian float32, row-major, batch first;
// "fixed_batch" optional) it runs the model's single input on the whole batch with
// graphOptimizationLevel 'all' and again with 'disabled', and on the first sample alone
// (batch 1, proving the batch dimension is dynamic) unless "fixed_batch" is true. Each
// run's output must have the expected dims, and for every sample row
//   max_j |ort_j - expected_j| / max(max_j |expected_j|, 1e-30)
// must be <= tolerance. Prints one line per model:
//   name: ORT ok, max relative difference 3.1e-07 over 16 samples (all 3.1e-07, ...)
// where the number is the worst over all runs. Exits 1 if any model fails (the message
// names the model, the run and the worst element), if a session cannot be created (with
// ONNX Runtime's message), or if DIR has no sidecar.
'use strict';

const fs = require('fs');
const path = require('path');

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  console.error('error: cannot load onnxruntime-node (' + e.message.split('\n')[0] + ');');
  console.error('       run scripts/fetch_onnxruntime.sh and set NODE_PATH to the directory it prints.');
  process.exit(1);
}

class CheckError extends Error {}

function fail(msg) {
  throw new CheckError(msg);
}

function readF32(file, count, what) {
  let buf;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    fail(`cannot read ${what} ${file}: ${e.message}`);
  }
  if (buf.length !== count * 4) {
    fail(`${what} ${file} has ${buf.length} bytes, expected ${count * 4} (${count} float32)`);
  }
  const out = new Float32Array(count);
  for (let i = 0; i < count; ++i) out[i] = buf.readFloatLE(4 * i);
  return out;
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

function checkShape(shape, what) {
  if (!Array.isArray(shape) || shape.length < 1 ||
      !shape.every((d) => Number.isInteger(d) && d > 0)) {
    fail(`${what} must be a non-empty array of positive integers, got ${JSON.stringify(shape)}`);
  }
}

// Worst relative difference over rows; returns {rel, sample, index, got, want}.
function compare(got, want, rows) {
  const cols = want.length / rows;
  let worst = {rel: 0, sample: 0, index: 0, got: got[0], want: want[0]};
  for (let r = 0; r < rows; ++r) {
    let scale = 0;
    for (let j = 0; j < cols; ++j) scale = Math.max(scale, Math.abs(want[r * cols + j]));
    scale = Math.max(scale, 1e-30);
    for (let j = 0; j < cols; ++j) {
      const g = got[r * cols + j];
      const w = want[r * cols + j];
      let rel = Math.abs(g - w) / scale;
      if (Number.isNaN(rel)) rel = Infinity;
      if (rel > worst.rel) worst = {rel, sample: r, index: j, got: g, want: w};
    }
  }
  return worst;
}

function fmt(x, digits = 1) {  // 3.1e-07, like C's %.1e
  return x.toExponential(digits).replace(/e([+-])(\d)$/, 'e$10$2');
}

async function runOnce(modelPath, level, inputData, inputShape) {
  let session;
  try {
    session = await ort.InferenceSession.create(modelPath, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: level,
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
    });
  } catch (e) {
    fail(`ONNX Runtime cannot create a session (graphOptimizationLevel '${level}'): ${e.message}`);
  }
  try {
    if (session.inputNames.length !== 1 || session.outputNames.length !== 1) {
      fail(`the graph must have one input and one output, it has inputs ` +
           `[${session.inputNames}] and outputs [${session.outputNames}]`);
    }
    const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', inputData, inputShape)};
    let results;
    try {
      results = await session.run(feeds);
    } catch (e) {
      fail(`ONNX Runtime failed to run it on input [${inputShape}] ` +
           `(graphOptimizationLevel '${level}'): ${e.message}`);
    }
    const out = results[session.outputNames[0]];
    if (out.type !== 'float32') fail(`output '${session.outputNames[0]}' is ${out.type}, not float32`);
    return {dims: Array.from(out.dims, Number), data: out.data};
  } finally {
    if (typeof session.release === 'function') await session.release();
  }
}

async function checkSidecar(dir, jsonFile) {
  let spec;
  try {
    spec = JSON.parse(fs.readFileSync(path.join(dir, jsonFile), 'utf8'));
  } catch (e) {
    fail(`cannot read sidecar ${jsonFile}: ${e.message}`);
  }
  for (const key of ['model', 'input', 'input_shape', 'expected', 'output_shape', 'tolerance']) {
    if (!(key in spec)) fail(`sidecar ${jsonFile} has no "${key}"`);
  }
  checkShape(spec.input_shape, 'input_shape');
  checkShape(spec.output_shape, 'output_shape');
  if (spec.input_shape[0] !== spec.output_shape[0]) {
    fail(`input_shape ${JSON.stringify(spec.input_shape)} and output_shape ` +
         `${JSON.stringify(spec.output_shape)} have different batch sizes`);
  }
  const tol = Number(spec.tolerance);
  if (!(tol >= 0)) fail(`tolerance must be a number >= 0, got ${JSON.stringify(spec.tolerance)}`);
  const resolve = (p) => (path.isAbsolute(p) ? p : path.join(dir, p));
  const modelPath = resolve(spec.model);
  if (!fs.existsSync(modelPath)) fail(`model ${modelPath} not found`);
  const input = readF32(resolve(spec.input), product(spec.input_shape), 'input');
  const expected = readF32(resolve(spec.expected), product(spec.output_shape), 'expected');
  const batch = spec.input_shape[0];

  const runs = [
    {label: 'all', level: 'all', inShape: spec.input_shape, outShape: spec.output_shape},
    {label: 'disabled', level: 'disabled', inShape: spec.input_shape, outShape: spec.output_shape},
  ];
  if (!spec.fixed_batch && batch > 1) {
    runs.push({label: 'batch 1', level: 'all', inShape: [1, ...spec.input_shape.slice(1)],
               outShape: [1, ...spec.output_shape.slice(1)]});
  }
  let worst = 0;
  const parts = [];
  const outputs = {};
  for (const run of runs) {
    const n = product(run.inShape);
    const m = product(run.outShape);
    let res;
    try {
      res = await runOnce(modelPath, run.level, input.subarray(0, n), run.inShape);
    } catch (e) {
      if (e instanceof CheckError && run.label === 'batch 1') {
        fail(`${e.message.trimEnd()}\n  (the batch-1 run: is the batch dimension dynamic? ` +
             `add "fixed_batch": true to the sidecar if it is meant not to be)`);
      }
      throw e;
    }
    if (res.dims.length !== run.outShape.length || res.dims.some((d, i) => d !== run.outShape[i])) {
      fail(`output dims [${res.dims}] differ from the expected [${run.outShape}] ` +
           `(${run.label})`);
    }
    const w = compare(res.data, expected.subarray(0, m), run.outShape[0]);
    if (!(w.rel <= tol)) {
      fail(`max relative difference ${fmt(w.rel, 2)} exceeds the tolerance ${fmt(tol)} ` +
           `(${run.label}): sample ${w.sample}, index ${w.index}: ORT ${fmt(w.got, 8)}, ` +
           `expected ${fmt(w.want, 8)}`);
    }
    outputs[run.label] = res.data;
    worst = Math.max(worst, w.rel);
    parts.push(`${run.label} ${fmt(w.rel)}`);
  }
  // Whether the optimized and unoptimized graphs give bit-identical outputs.
  const a = outputs['all'];
  const b = outputs['disabled'];
  let same = a.length === b.length;
  for (let i = 0; same && i < a.length; ++i) same = a[i] === b[i] || (a[i] !== a[i] && b[i] !== b[i]);
  parts.push(same ? 'all = disabled bitwise' : 'all != disabled bitwise');
  return `ORT ok, max relative difference ${fmt(worst)} over ${batch} samples (${parts.join(', ')})`;
}

async function main() {
  if (process.argv.length !== 3) {
    console.error('usage: NODE_PATH=<node_modules> node tests/onnx/ort_check.js DIR');
    process.exit(2);
  }
  const dir = process.argv[2];
  let files;
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch (e) {
    console.error(`error: cannot read ${dir}: ${e.message}`);
    process.exit(1);
  }
  if (files.length === 0) {
    console.error(`error: no *.json sidecar in ${dir}`);
    process.exit(1);
  }
  console.log(`onnxruntime-node ${ort.env.versions ? ort.env.versions.node : '?'}, ` +
              `${files.length} sidecar(s) in ${dir}`);
  let failed = 0;
  for (const f of files) {
    const name = f.slice(0, -'.json'.length);
    try {
      console.log(`${name}: ${await checkSidecar(dir, f)}`);
    } catch (e) {
      if (!(e instanceof CheckError)) throw e;
      console.error(`error: ${name}: ${e.message}`);
      ++failed;
    }
  }
  if (failed > 0) {
    console.error(`error: ${failed} of ${files.length} model(s) failed the ONNX Runtime check`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error('error: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});

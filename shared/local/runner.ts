// Runs statemachines/backup.asl.json in-process with aws-local-stepfunctions:
// the same definition that deploys to AWS, its Lambda ARNs mapped to the step
// functions, its waits and retry intervals shortened, over the local adapters.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { STEPS } from '../../functions/registry.js';
import type { StepDeps } from '../../functions/step-deps.js';
import { describeCaught } from '../../functions/cleanup/step.js';
import type { StepName } from '../core/pipeline.js';
import { ValidationError, toError } from '../core/errors.js';
import type { Policy } from '../core/config.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { silentLogger } from '../core/logger.js';
import type { VmOutcome } from '../core/run-schemas.js';
import type { ApplyRetentionOutput } from '../../functions/apply-retention/schema.js';
import { ProgressView, stepWords, summaryTable, type Output } from './progress-view.js';
import { ConfigError } from '../core/errors.js';
import { findPolicy } from '../core/config.js';
import type { LoadedConfig } from './load-config.js';
import { createLocalCloud, type LocalCloud, type LocalCloudOptions } from './local-cloud.js';

// aws-local-stepfunctions 3 uses Promise.withResolvers, which Node 20 lacks.
if (typeof (Promise as any).withResolvers !== 'function') {
  (Promise as any).withResolvers = function <T>() {
    let resolve!: (v: T) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
  };
}

export const DEFINITION_PATH = fileURLToPath(new URL('../../statemachines/backup.asl.json', import.meta.url));

/** What the deploy resolves in Resource ARNs, given local values so the definition validates as written. */
const LOCAL_SUBSTITUTIONS: Record<string, string> = {
  '#{AWS::Region}': 'us-east-1',
  '#{AWS::AccountId}': '000000000000',
  '${self:service}': 'tender',
  '${sls:stage}': 'local',
};

export function loadDefinition(path = DEFINITION_PATH): StateMachineDefinition {
  let text = readFileSync(path, 'utf8');
  for (const [k, v] of Object.entries(LOCAL_SUBSTITUTIONS)) text = text.split(k).join(v);
  return JSON.parse(text) as StateMachineDefinition;
}

/** Every Task state, nested ones included, with the step its Resource names (the ARN's last `-` part). */
export function taskStates(def: { States: Record<string, any> }): Array<{ name: string; step: StepName }> {
  const out: Array<{ name: string; step: StepName }> = [];
  for (const [name, s] of Object.entries(def.States)) {
    if (s.Type === 'Task') {
      const step = String(s.Resource).split(':function:').pop()!.split('-').pop() as StepName;
      if (!(step in STEPS)) throw new ValidationError(`state ${name} calls "${s.Resource}", which names no step of the pipeline`);
      out.push({ name, step });
    }
    const nested = s.ItemProcessor ?? s.Iterator;
    if (nested) out.push(...taskStates(nested));
    for (const b of s.Branches ?? []) out.push(...taskStates(b));
  }
  return out;
}

function stateNamesOfType(def: { States: Record<string, any> }, type: string): string[] {
  const out: string[] = [];
  for (const [name, s] of Object.entries(def.States)) {
    if (s.Type === type) out.push(name);
    const nested = s.ItemProcessor ?? s.Iterator;
    if (nested) out.push(...stateNamesOfType(nested, type));
  }
  return out;
}

export interface FailureInjection {
  step: StepName;
  /** Only for this VM (default: every VM). */
  vmId?: string;
  error: () => Error;
}

export interface ExecuteOptions {
  deps: StepDeps;
  input: { runId?: string; applianceId: string; policy: Policy };
  definition?: StateMachineDefinition;
  /** Milliseconds each Wait state lasts (default 250). */
  waitMs?: number;
  /** Milliseconds between retries (default 100). */
  retryMs?: number;
  inject?: FailureInjection[];
  onEvent?: (event: any) => void;
}

export interface RunSummary {
  runId: string;
  policy: string;
  startedAt: string;
  vms: VmOutcome[];
  retention: ApplyRetentionOutput | { error: { name: string; message: string } };
  ok: boolean;
}

function toJson(v: unknown): any {
  return JSON.parse(JSON.stringify(v ?? null));
}

function normaliseOutcome(o: any): VmOutcome {
  // CleanupIncomplete (cleanup itself kept failing) carries both errors raw.
  if (o && o.caught) {
    const cleanupErr = describeCaught(o.cleanupError);
    return {
      vmId: o.vmId,
      vmName: o.vmName,
      outcome: 'failed',
      step: o.step,
      error: describeCaught(o.caught),
      cleanup: { revoked: [], workerRemoved: false, problems: [`cleanup did not complete: ${cleanupErr.name}: ${cleanupErr.message}`] },
    };
  }
  return o as VmOutcome;
}

/** Executes the state machine once; resolves with the run's summary (VM failures are in it, not thrown). */
export async function executeBackup(opts: ExecuteOptions): Promise<RunSummary> {
  const definition = opts.definition ?? loadDefinition();
  const handlers: Record<string, (input: any) => Promise<any>> = {};
  const retryOverrides: Record<string, number> = {};
  for (const { name, step } of taskStates(definition)) {
    const entry = STEPS[step];
    retryOverrides[name] = opts.retryMs ?? 100;
    handlers[name] = async (raw: any) => {
      for (const inj of opts.inject ?? []) {
        if (inj.step === step && (!inj.vmId || raw?.vm?.vmId === inj.vmId)) throw inj.error();
      }
      let input: unknown;
      try {
        input = entry.input.parse(raw);
      } catch (e) {
        if (e instanceof z.ZodError) throw new ValidationError(`${step}: its input does not match its schema: ${e.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
        throw e;
      }
      const out = await entry.run(input, opts.deps);
      // Lambda serialises results as JSON: so does this, so undefined never leaks into a state.
      return toJson(entry.output.parse(out));
    };
  }
  const waits = Object.fromEntries(stateNamesOfType(definition, 'Wait').map((n) => [n, opts.waitMs ?? 250]));
  const machine = new StateMachine(definition, { validationOptions: { checkArn: true, checkPaths: true } });
  const execution = machine.run(toJson(opts.input), {
    overrides: { taskResourceLocalHandlers: handlers, waitTimeOverrides: waits, retryIntervalOverrides: retryOverrides },
  });
  const events = (async () => {
    for await (const ev of execution.eventLogs) opts.onEvent?.(ev);
  })();
  let output: any;
  try {
    output = await execution.result;
  } catch (e) {
    // Only PlanBackup and the Map itself can fail the execution: VM failures end in cleanup.
    const err = toError(e);
    const inner = (err as any).cause instanceof Error ? ((err as any).cause as Error) : err;
    throw inner;
  } finally {
    await events.catch(() => undefined);
  }
  const vms = (output.vms as any[]).map(normaliseOutcome);
  const retention = output.retention?.Error ? { error: describeCaught(output.retention) } : output.retention;
  return { runId: output.runId, policy: output.policy, startedAt: output.startedAt, vms, retention, ok: vms.every((v) => v.outcome === 'succeeded') && !('error' in retention) };
}

/** Feeds the state machine's event log into a progress view. */
export function progressFromEvents(view: ProgressView): (ev: any) => void {
  return (ev: any) => {
    if (ev.type === 'StateExited' && ev.state?.name === 'PlanBackup' && ev.index === undefined) {
      const vms = (ev.state.output?.vms ?? []) as Array<{ vmId: string; name: string; disks: Array<{ sizeBytes: number }> }>;
      view.setVms(vms.map((v) => ({ vmId: v.vmId, name: v.name, totalBytes: v.disks.reduce((n, d) => n + d.sizeBytes, 0) })));
      return;
    }
    if (ev.index === undefined) return;
    if (ev.type === 'StateEntered') {
      const words = stepWords(ev.state.name);
      if (words) view.update(ev.index, { step: words });
    } else if (ev.type === 'StateExited' && ev.state?.name === 'CheckBackup') {
      const p = ev.state.output?.job?.progress;
      if (p) view.update(ev.index, { bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, bytesPerSecond: p.bytesPerSecond });
    } else if (ev.type === 'StateExited' && (ev.state?.name === 'RecordOutcome' || ev.state?.name === 'Cleanup' || ev.state?.name === 'CleanupIncomplete')) {
      const o = ev.state.output;
      view.update(ev.index, { step: o?.outcome === 'succeeded' ? 'done' : `failed at ${o?.step}` });
    } else if (ev.type === 'StateRetried') {
      view.update(ev.index, { note: `retrying ${ev.state.name}` });
    }
  };
}

export interface LocalRunOptions {
  loaded: LoadedConfig;
  policyName: string;
  runId?: string;
  out?: Output;
  /** Live view (default: when `out` is a terminal). */
  live?: boolean;
  logger?: Logger;
  clock?: Clock;
  waitMs?: number;
  retryMs?: number;
  inject?: FailureInjection[];
  /** Reuse a local cloud (tests inspect it afterwards); otherwise one is made and closed. */
  cloud?: LocalCloud;
  cloudOptions?: Partial<LocalCloudOptions>;
}

/** `tender backup --local`: runs one policy on this machine and prints what happens. */
export async function runLocalBackup(opts: LocalRunOptions): Promise<RunSummary> {
  const { config, workDir } = opts.loaded;
  const policy = findPolicy(config, opts.policyName);
  if (policy.provider !== 'local') {
    throw new ConfigError(`policy "${policy.name}" has provider ${policy.provider}: --local runs provider: local policies only — run it without --local against the deployed state machine`);
  }
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const out = opts.out ?? { write: () => true };
  const cloud = opts.cloud ?? (await createLocalCloud({ workDir, vms: config.local?.vms ?? [], clock, logger, ...opts.cloudOptions }));
  const view = new ProgressView(out, { live: opts.live });
  try {
    const summary = await executeBackup({
      deps: { cloud, restorePoints: cloud.restorePoints, clock, logger },
      input: { runId: opts.runId, applianceId: config.applianceId, policy },
      waitMs: opts.waitMs,
      retryMs: opts.retryMs,
      inject: opts.inject,
      onEvent: progressFromEvents(view),
    });
    view.stop();
    out.write(summaryTable(summary.vms));
    return summary;
  } finally {
    view.stop();
    if (!opts.cloud) await cloud.close();
  }
}

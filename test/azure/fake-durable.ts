// A fake Durable Functions host for orchestrator tests: `context.df` with
// callActivity / callActivityWithRetry / callSubOrchestrator / createTimer /
// Task.any / Task.all / currentUtcDateTime, and a driver that runs the
// orchestrator generator, settling each yielded task the way the host would:
// activities run (through the real activity handlers), timers move the shared
// clock to their fire time, sub-orchestrations run nested. Failed activities
// come back as the host hands them over: a TaskFailedError with failure
// details, or (older hosts) an Error of "Reason \n Details".

import type { fixedClock } from '../../shared/core/clock.js';

type Clock = ReturnType<typeof fixedClock>;

export interface FakeTask {
  kind: 'activity' | 'timer' | 'sub' | 'any' | 'all';
  isCompleted: boolean;
  isFaulted: boolean;
  result?: unknown;
  error?: unknown;
  name?: string;
  input?: unknown;
  instanceId?: string;
  fireAt?: Date;
  retry?: { maxNumberOfAttempts: number };
  tasks?: FakeTask[];
  cancel?: () => void;
  isCanceled?: boolean;
}

export interface HistoryEvent {
  type: 'activity' | 'timer' | 'sub-start' | 'sub-end' | 'any';
  instanceId: string;
  name?: string;
  input?: any;
  ok?: boolean;
  error?: string;
  at: string;
  /** For 'any': how many tasks were pending in it. */
  pending?: number;
}

export interface DriverOptions {
  activities: Record<string, (input: unknown, context: any) => Promise<unknown>>;
  orchestrators: Record<string, (ctx: any) => Generator<any, any, any>>;
  clock: Clock;
  failureStyle?: 'structured' | 'legacy';
}

const json = <T>(v: T): T => (v === undefined ? v : JSON.parse(JSON.stringify(v)));

function hostError(e: unknown, activity: string, style: 'structured' | 'legacy'): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  if (style === 'legacy') return new Error(`Exception while executing function: Functions.${activity} \n Error: ${err.message}\n    at activity (index.js:1:1)`);
  const fd = { errorType: err.name, errorMessage: err.message, isNonRetriable: false, isCausedBy: (t: string) => t === err.name };
  return Object.assign(new Error(`${fd.errorType}: ${fd.errorMessage}`), { name: 'TaskFailedError', failureDetails: fd, taskName: activity });
}

export function createDurableDriver(opts: DriverOptions) {
  const history: HistoryEvent[] = [];
  const customStatus = new Map<string, unknown>();
  const style = opts.failureStyle ?? 'structured';
  const now = () => opts.clock.now().toISOString();
  const logCtx = { debug() {}, info() {}, warn() {}, error() {}, log() {}, trace() {} };

  function makeContext(name: string, input: unknown, instanceId: string) {
    const task = (t: Omit<FakeTask, 'isCompleted' | 'isFaulted'>): FakeTask => ({ ...t, isCompleted: false, isFaulted: false });
    return {
      ...logCtx,
      functionName: name,
      invocationId: instanceId,
      df: {
        instanceId,
        isReplaying: false,
        get currentUtcDateTime() {
          return opts.clock.now();
        },
        getInput: () => json(input),
        setCustomStatus: (s: unknown) => customStatus.set(instanceId, json(s)),
        callActivity: (activity: string, activityInput?: unknown) => task({ kind: 'activity', name: activity, input: activityInput, instanceId }),
        callActivityWithRetry: (activity: string, retry: { maxNumberOfAttempts: number }, activityInput?: unknown) =>
          task({ kind: 'activity', name: activity, input: activityInput, instanceId, retry }),
        callSubOrchestrator: (orch: string, subInput?: unknown, subId?: string) => task({ kind: 'sub', name: orch, input: subInput, instanceId: subId ?? `${instanceId}:sub` }),
        createTimer: (fireAt: Date) => {
          const t = task({ kind: 'timer', fireAt, instanceId });
          t.cancel = () => void (t.isCanceled = true);
          return t;
        },
        Task: {
          any: (tasks: FakeTask[]) => task({ kind: 'any', tasks, instanceId }),
          all: (tasks: FakeTask[]) => task({ kind: 'all', tasks, instanceId }),
        },
      },
    };
  }

  async function settle(t: FakeTask): Promise<void> {
    if (t.isCompleted) return;
    switch (t.kind) {
      case 'activity': {
        const fn = opts.activities[t.name!];
        const tries = t.retry?.maxNumberOfAttempts ?? 1;
        for (let attempt = 1; ; attempt++) {
          try {
            if (!fn) throw new Error(`no activity named ${t.name}`);
            t.result = json(await fn(json(t.input), { ...logCtx, invocationId: `${t.instanceId}:${t.name}`, functionName: t.name }));
            history.push({ type: 'activity', instanceId: t.instanceId!, name: t.name, input: json(t.input), ok: true, at: now() });
            break;
          } catch (e) {
            history.push({ type: 'activity', instanceId: t.instanceId!, name: t.name, input: json(t.input), ok: false, error: (e as Error).message, at: now() });
            if (attempt < tries) continue;
            t.error = hostError(e, t.name!, style);
            t.result = t.error;
            t.isFaulted = true;
            break;
          }
        }
        break;
      }
      case 'timer': {
        const target = t.fireAt!.getTime();
        const cur = opts.clock.now().getTime();
        if (target > cur) opts.clock.advance(target - cur);
        history.push({ type: 'timer', instanceId: t.instanceId!, at: now() });
        break;
      }
      case 'sub': {
        history.push({ type: 'sub-start', instanceId: t.instanceId!, name: t.name, at: now() });
        try {
          t.result = json(await run(t.name!, t.input, t.instanceId!));
        } catch (e) {
          t.error = e;
          t.result = e;
          t.isFaulted = true;
        }
        history.push({ type: 'sub-end', instanceId: t.instanceId!, name: t.name, ok: !t.isFaulted, at: now() });
        break;
      }
      case 'any': {
        history.push({ type: 'any', instanceId: t.instanceId!, pending: t.tasks!.filter((x) => !x.isCompleted).length, at: now() });
        const done = t.tasks!.find((x) => x.isCompleted) ?? t.tasks![0]!;
        await settle(done);
        t.result = done;
        break;
      }
      case 'all': {
        for (const x of t.tasks!) await settle(x);
        const failed = t.tasks!.find((x) => x.isFaulted);
        if (failed) {
          t.error = failed.error;
          t.isFaulted = true;
        } else t.result = t.tasks!.map((x) => x.result);
        break;
      }
    }
    t.isCompleted = true;
  }

  async function run(name: string, input: unknown, instanceId: string): Promise<unknown> {
    const orch = opts.orchestrators[name];
    if (!orch) throw new Error(`no orchestrator named ${name}`);
    const gen = orch(makeContext(name, input, instanceId));
    let step = gen.next();
    while (!step.done) {
      const t = step.value as FakeTask;
      await settle(t);
      // Task.any hands back the winning task itself, faulted or not; other tasks throw their failure.
      if (t.kind !== 'any' && t.isFaulted) step = gen.throw(t.error);
      else step = gen.next(t.result);
    }
    return step.value;
  }

  return { history, customStatus, run };
}

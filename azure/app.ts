// Registers Tender's functions with the Functions v4 programming model: a
// timer trigger per Azure policy (its schedule), an HTTP trigger to start a
// policy now, the two orchestrations and one activity per step. The API is
// passed in (azure/index.ts gives the real @azure/functions and
// durable-functions), so tests register against fakes and call the handlers.

import type { HttpRequest, InvocationContext, Timer } from '@azure/functions';
import type * as df from 'durable-functions';
import type { Config, Policy } from '../shared/core/config.js';
import { PlanBackupInput } from '../functions/plan-backup/schema.js';
import { activityHandlers, type DepsFor } from './activities.js';
import { ORCHESTRATOR, VM_ORCHESTRATOR, backupOrchestrator, backupVmOrchestrator } from './orchestrator.js';

export interface DurableClientLike {
  startNew(orchestratorName: string, options?: { instanceId?: string; input?: unknown }): Promise<string>;
  getStatus(instanceId: string): Promise<{ runtimeStatus?: string } | undefined>;
  createCheckStatusResponse(request: HttpRequest | undefined, instanceId: string): unknown;
}

/** The parts of @azure/functions and durable-functions Tender registers with. */
export interface FunctionsApi {
  app: {
    timer(name: string, options: { schedule: string; runOnStartup?: boolean; extraInputs?: unknown[]; handler: (timer: Timer, context: InvocationContext) => Promise<void> }): void;
    http(name: string, options: { route: string; methods: string[]; authLevel: 'anonymous' | 'function' | 'admin'; extraInputs?: unknown[]; handler: (request: HttpRequest, context: InvocationContext) => Promise<unknown> }): void;
  };
  df: {
    app: {
      orchestration(name: string, handler: df.OrchestrationHandler): unknown;
      activity(name: string, options: { handler: (input: unknown, context: InvocationContext) => Promise<unknown> }): unknown;
    };
    input: { durableClient(): unknown };
    getClient(context: InvocationContext): DurableClientLike;
  };
}

/** Azure timers take six-field NCRONTAB (seconds first); policies are written in five-field cron. */
export function ncrontabOf(cron: string): string {
  return `0 ${cron.trim().split(/\s+/).join(' ')}`;
}

/** yyyyMMddTHHmmZ of `d`. */
function minuteStamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\d\d\.\d+Z$/, 'Z');
}

/**
 * A scheduled run is named by its policy and the minute it fired: a timer
 * that fires twice for one schedule (host restart, scale-out) starts one run.
 */
export function scheduledRunId(policy: string, at: Date): { runId: string; instanceId: string } {
  const runId = `r${minuteStamp(at)}-${policy}`.slice(0, 80);
  return { runId, instanceId: `tender-${runId}` };
}

export function azurePolicies(config: Config): Policy[] {
  return config.policies.filter((p) => p.provider === 'azure');
}

export interface RegisteredApp {
  timers: Array<{ name: string; policy: string; schedule: string }>;
  http: string;
  orchestrations: string[];
  activities: string[];
}

export function registerTenderApp(opts: { api: FunctionsApi; config: Config; depsFor: DepsFor; now?: () => Date }): RegisteredApp {
  const { api, config } = opts;
  const now = opts.now ?? (() => new Date());
  const clientInput = api.df.input.durableClient();
  const out: RegisteredApp = { timers: [], http: 'tender-start', orchestrations: [ORCHESTRATOR, VM_ORCHESTRATOR], activities: [] };

  api.df.app.orchestration(ORCHESTRATOR, backupOrchestrator);
  api.df.app.orchestration(VM_ORCHESTRATOR, backupVmOrchestrator);
  for (const [name, handler] of Object.entries(activityHandlers(opts.depsFor))) {
    api.df.app.activity(name, { handler });
    out.activities.push(name);
  }

  for (const policy of azurePolicies(config).filter((p) => p.enabled)) {
    const name = `tender-schedule-${policy.name}`;
    const schedule = ncrontabOf(policy.schedule);
    api.app.timer(name, {
      schedule,
      extraInputs: [clientInput],
      handler: async (_timer, context) => {
        const client = api.df.getClient(context);
        const { runId, instanceId } = scheduledRunId(policy.name, now());
        const existing = await client.getStatus(instanceId).catch(() => undefined);
        if (existing?.runtimeStatus) {
          context.info(`run ${runId} of policy ${policy.name} was already started (${existing.runtimeStatus}); not starting it twice`);
          return;
        }
        await client.startNew(ORCHESTRATOR, { instanceId, input: { runId, applianceId: config.applianceId, policy } });
        context.info(`started run ${runId} of policy ${policy.name}`);
      },
    });
    out.timers.push({ name, policy: policy.name, schedule });
  }

  api.app.http(out.http, {
    route: 'backup/{policy}',
    methods: ['POST'],
    authLevel: 'function',
    extraInputs: [clientInput],
    handler: async (request, context) => {
      const name = request.params.policy ?? '';
      const policy = azurePolicies(config).find((p) => p.name === name);
      if (!policy) {
        const names = azurePolicies(config).map((p) => p.name);
        return { status: 404, jsonBody: { error: `no Azure policy named "${name}" — this deployment has: ${names.join(', ') || 'none'}` } };
      }
      let body: { runId?: unknown } = {};
      const text = await request.text();
      if (text.trim()) {
        try {
          body = JSON.parse(text) as { runId?: unknown };
        } catch {
          return { status: 400, jsonBody: { error: 'the body must be JSON, e.g. {"runId": "r-manual-1"}, or empty' } };
        }
      }
      const runIdCheck = PlanBackupInput.shape.runId.safeParse(body.runId ?? undefined);
      if (!runIdCheck.success) return { status: 400, jsonBody: { error: `runId ${runIdCheck.error.issues[0]?.message ?? 'is not valid'}` } };
      // A manual run without a runId is named by the minute and "m", apart from the scheduled one.
      const runId = runIdCheck.data ?? `r${minuteStamp(now())}-m-${policy.name}`.slice(0, 80);
      const instanceId = `tender-${runId}`;
      const client = api.df.getClient(context);
      const existing = await client.getStatus(instanceId).catch(() => undefined);
      if (existing?.runtimeStatus) {
        return { status: 409, jsonBody: { error: `run ${runId} already exists (${existing.runtimeStatus}); give another runId`, instanceId } };
      }
      await client.startNew(ORCHESTRATOR, { instanceId, input: { runId, applianceId: config.applianceId, policy } });
      context.info(`started run ${runId} of policy ${policy.name} by HTTP`);
      return client.createCheckStatusResponse(request, instanceId);
    },
  });
  return out;
}

// `tender backup --policy NAME` for an Azure policy: the Function app's HTTP
// trigger (POST /api/backup/{policy}, function-level key) starts the Durable
// orchestration, as the timer does on schedule.

import { ConfigError, AccessDeniedError, NotFoundError, TransientError } from '../core/errors.js';

export interface StartAzureRunOptions {
  policyName: string;
  runId?: string;
  json?: boolean;
  env: NodeJS.ProcessEnv;
  stdout: (s: string) => void;
  fetch?: typeof fetch;
}

export async function startAzureRunFromCli(opts: StartAzureRunOptions): Promise<number> {
  const base = opts.env.TENDER_AZURE_FUNCTION_URL;
  const key = opts.env.TENDER_AZURE_FUNCTION_KEY;
  if (!base || !key) {
    throw new ConfigError('to start an Azure policy, set TENDER_AZURE_FUNCTION_URL (https://<app>.azurewebsites.net) and TENDER_AZURE_FUNCTION_KEY (the function key: az functionapp keys list)');
  }
  const url = `${base.replace(/\/+$/, '')}/api/backup/${encodeURIComponent(opts.policyName)}`;
  let res: Response;
  try {
    res = await (opts.fetch ?? fetch)(url, {
      method: 'POST',
      headers: { 'x-functions-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(opts.runId ? { runId: opts.runId } : {}),
    });
  } catch (e) {
    throw new TransientError(`could not reach ${url}: ${(e as Error).message}`, { cause: e });
  }
  const text = await res.text();
  if (res.status === 401 || res.status === 403) throw new AccessDeniedError(`${url} refused the function key (${res.status}) — check TENDER_AZURE_FUNCTION_KEY`);
  if (res.status === 404) throw new NotFoundError(`${url} answered 404: is the policy "${opts.policyName}" deployed to that Function app?`);
  if (!res.ok) throw new TransientError(`${url} answered ${res.status}: ${text.slice(0, 300)}`);
  opts.stdout(opts.json ? `${text.trim()}\n` : `started a backup of policy "${opts.policyName}" on Azure: ${text.trim()}\n`);
  return 0;
}

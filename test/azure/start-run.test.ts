// `tender backup --policy NAME` for an Azure policy calls the Function app's manual-start trigger.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startAzureRunFromCli } from '../../shared/azure/start-run.js';
import { AccessDeniedError, ConfigError } from '../../shared/core/errors.js';

test('azure start: POSTs to /api/backup/{policy} with the function key and prints the instance', async () => {
  const seen: Array<{ url: string; init: RequestInit }> = [];
  const fakeFetch = (async (url: string, init: RequestInit) => {
    seen.push({ url, init });
    return Response.json({ id: 'tender-gold-r1' }, { status: 202 });
  }) as unknown as typeof fetch;
  let out = '';
  const code = await startAzureRunFromCli({ policyName: 'gold', runId: 'r1', env: { TENDER_AZURE_FUNCTION_URL: 'https://app.azurewebsites.net/', TENDER_AZURE_FUNCTION_KEY: 'k' }, stdout: (s) => (out += s), fetch: fakeFetch });
  assert.equal(code, 0);
  assert.equal(seen[0]!.url, 'https://app.azurewebsites.net/api/backup/gold');
  assert.equal((seen[0]!.init.headers as Record<string, string>)['x-functions-key'], 'k');
  assert.deepEqual(JSON.parse(String(seen[0]!.init.body)), { runId: 'r1' });
  assert.match(out, /started a backup of policy "gold" on Azure: .*tender-gold-r1/);
});

test('azure start: missing settings and a refused key say what to set', async () => {
  await assert.rejects(startAzureRunFromCli({ policyName: 'gold', env: {}, stdout: () => undefined }), (e: Error) => e instanceof ConfigError && /TENDER_AZURE_FUNCTION_URL/.test(e.message));
  const denied = (async () => new Response('no', { status: 401 })) as unknown as typeof fetch;
  await assert.rejects(
    startAzureRunFromCli({ policyName: 'gold', env: { TENDER_AZURE_FUNCTION_URL: 'https://app', TENDER_AZURE_FUNCTION_KEY: 'bad' }, stdout: () => undefined, fetch: denied }),
    AccessDeniedError,
  );
});

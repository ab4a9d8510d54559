// The run state and the catalog in a blob container of the Function app's
// storage account (Azurite here): read-modify-write that loses no update,
// and run records whose last write wins.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BlobServiceClient } from '@azure/storage-blob';
import { startAzurite, type Azurite } from '../support/azurite.js';
import { createBlobStateStore } from '../../shared/azure/state-store.js';
import { createAzureCatalog } from '../../shared/azure/catalog.js';

let az: Azurite;
let service: BlobServiceClient;
before(async () => {
  az = await startAzurite();
  service = BlobServiceClient.fromConnectionString(az.connectionString);
});
after(async () => {
  await az?.stop();
});

test('state store: creates its container, reads back what it wrote, and concurrent updates lose nothing', async () => {
  // Prepare
  const state = createBlobStateStore({ container: service.getContainerClient('tender-state-1') });
  // Act
  assert.equal(await state.read('grants/x.json'), undefined);
  await state.write('grants/x.json', { items: [] });
  await Promise.all(Array.from({ length: 8 }, (_, i) => state.update<{ items: number[] }>('grants/x.json', (cur) => ({ items: [...(cur?.items ?? []), i] }))));
  const doc = await state.read<{ items: number[] }>('grants/x.json');
  await state.delete('grants/x.json');
  await state.delete('grants/x.json');
  // Assess
  assert.deepEqual([...doc!.value.items].sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(await state.read('grants/x.json'), undefined);
});

test('catalog: one record per (run, VM), the last write wins; filters by policy and VM; oldest first', async () => {
  // Prepare
  const catalog = createAzureCatalog({ state: createBlobStateStore({ container: service.getContainerClient('tender-state-2') }) });
  const vm = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-1';
  // Act
  await catalog.recordRun({ runId: 'r2', policy: 'gold', vmId: vm, outcome: 'failed', step: 'snapshot', finishedAt: '2024-03-02T02:00:00Z' });
  await catalog.recordRun({ runId: 'r2', policy: 'gold', vmId: vm, outcome: 'succeeded', restorePointId: 'rp2', snapshotSetId: 'ss2', finishedAt: '2024-03-02T02:05:00Z' });
  await catalog.recordRun({ runId: 'r1', policy: 'gold', vmId: vm, outcome: 'succeeded', restorePointId: 'rp1', finishedAt: '2024-03-01T02:05:00Z' });
  await catalog.recordRun({ runId: 'r1', policy: 'silver', vmId: 'other', outcome: 'succeeded', finishedAt: '2024-03-01T03:00:00Z' });
  // Assess
  const gold = await catalog.listRuns({ policy: 'gold', vmId: vm });
  assert.deepEqual(gold.map((r) => [r.runId, r.outcome]), [['r1', 'succeeded'], ['r2', 'succeeded']]);
  assert.equal((await catalog.listRuns()).length, 3);
  assert.deepEqual(await createAzureCatalog({ state: createBlobStateStore({ container: service.getContainerClient('tender-state-empty') }) }).listRuns(), []);
});

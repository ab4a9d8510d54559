import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  BlobServiceClient,
  ContainerSASPermissions,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  type ContainerClient,
} from '@azure/storage-blob';
import { createBlobStore } from '../../shared/azure/blob-store.js';
import { startAzurite, type Azurite } from '../support/azurite.js';
import { describeObjectStoreContract } from './contract.js';

const CONTAINER = 'tender-test';
const text = (s: string) => new TextEncoder().encode(s);

let az: Azurite;
let container: ContainerClient;
let n = 0;

describe('Azure Blob store against Azurite', () => {
  before(async () => {
    az = await startAzurite();
    container = BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient(CONTAINER);
    await container.create();
  });
  after(async () => {
    await az?.stop();
  });

  describeObjectStoreContract('azure blob (Azurite)', () =>
    createBlobStore({ containerClient: container, prefix: `contract-${++n}`, listPageSize: 7 }),
  );

  it('keeps repositories under different prefixes of one container apart, and names its location', async () => {
    // Prepare
    const a = createBlobStore({ containerClient: container, prefix: 'iso/a' });
    const b = createBlobStore({ containerClient: container, prefix: 'iso/ab/' });
    // Act
    await a.put('config', text('A'));
    await b.put('config', text('B'));
    const listedA: string[] = [];
    for await (const i of a.list('')) listedA.push(i.key);
    // Assess
    assert.deepEqual(listedA, ['config']);
    assert.equal(Buffer.from(await b.get('config')).toString(), 'B');
    assert.equal(a.location, `azblob://${az.account}/${CONTAINER}/iso/a/`);
    assert.equal((await container.getBlockBlobClient('iso/ab/config').downloadToBuffer()).toString(), 'B');
  });

  it('creates a large object with putIfAbsent atomically: staged blocks, one conditional commit', async () => {
    // Prepare
    const store = createBlobStore({ containerClient: container, prefix: 'big-cond' });
    const data = randomBytes(17 * 1024 * 1024);
    // Act
    const first = await store.putIfAbsent('pack', data);
    const second = await store.putIfAbsent('pack', randomBytes(17 * 1024 * 1024));
    // Assess
    assert.equal(first, true);
    assert.equal(second, false);
    assert.equal(Buffer.compare(Buffer.from(await store.get('pack')), data), 0);
  });

  it('says which container is missing instead of reporting a missing object', async () => {
    // Prepare
    const svc = BlobServiceClient.fromConnectionString(az.connectionString);
    const store = createBlobStore({ containerClient: svc.getContainerClient('no-such-container'), prefix: 'r' });
    // Act / Assess
    await assert.rejects(store.get('config'), (err: Error) => err.name === 'ConfigError' && /no-such-container/.test(err.message));
    await assert.rejects(store.put('config', text('x')), (err: Error) => err.name === 'ConfigError' && /does not exist/.test(err.message));
  });

  it('maps a SAS without write permission to AccessDeniedError naming the container and the permission', async () => {
    // Prepare: a read+list SAS, like a restore-only worker would get.
    const cred = new StorageSharedKeyCredential(az.account, az.accountKey);
    const sas = generateBlobSASQueryParameters(
      {
        containerName: CONTAINER,
        permissions: ContainerSASPermissions.parse('rl'),
        startsOn: new Date(Date.now() - 60_000),
        expiresOn: new Date(Date.now() + 3600_000),
      },
      cred,
    ).toString();
    const svc = new BlobServiceClient(`${az.blobUrl}?${sas}`);
    const store = createBlobStore({ containerClient: svc.getContainerClient(CONTAINER), prefix: 'ro' });
    // Act / Assess
    await assert.rejects(store.put('config', text('x')), (err: Error) => {
      assert.equal(err.name, 'AccessDeniedError');
      assert.match(err.message, new RegExp(`container "${az.account}/${CONTAINER}"`));
      assert.match(err.message, /blobs\/write/);
      assert.match(err.message, /"config"/);
      assert.doesNotMatch(err.message, /sig=/, 'no SAS in the message');
      return true;
    });
  });

  it('reports an unreachable endpoint as a TransientError naming the store', async () => {
    // Prepare
    const svc = new BlobServiceClient(`http://127.0.0.1:9/${az.account}`, undefined, { retryOptions: { maxTries: 1 } });
    const store = createBlobStore({ containerClient: svc.getContainerClient(CONTAINER), prefix: 'down' });
    // Act / Assess
    await assert.rejects(store.get('config'), (err: Error) => err.name === 'TransientError' && err.message.includes(`/${CONTAINER}/down/`));
  });
});

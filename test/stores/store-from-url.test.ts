import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { BlobServiceClient } from '@azure/storage-blob';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { startS3Server, type S3Server } from '../support/s3-server.js';
import { startAzurite, type Azurite } from '../support/azurite.js';

const text = (s: string) => new TextEncoder().encode(s);
let dir: string;
let s3: S3Server;
let az: Azurite;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tender-url-'));
  [s3, az] = await Promise.all([startS3Server(['repo-bucket']), startAzurite()]);
  await BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('backups').create();
});
after(async () => {
  await Promise.all([s3?.stop(), az?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

describe('openStoreFromUrl: file:', () => {
  it('opens absolute paths in every spelling', async () => {
    for (const url of [`file:${dir}/abs1`, `file://${dir}/abs2`, `file://localhost${dir}/abs3`]) {
      // Act
      const store = await openStoreFromUrl(url);
      await store.put('config', text(url));
      // Assess
      const folder = url.slice(url.lastIndexOf('/') + 1);
      assert.equal(await readFile(join(dir, folder, 'config'), 'utf8'), url);
      assert.equal(store.location, `file:${join(dir, folder)}`);
    }
  });

  it('resolves a relative path against cwd and decodes %-escapes', async () => {
    // Act
    const store = await openStoreFromUrl('file:rel/my%20repo', { cwd: dir });
    await store.put('k', text('v'));
    // Assess
    assert.equal(await readFile(join(dir, 'rel', 'my repo', 'k'), 'utf8'), 'v');
  });
});

describe('openStoreFromUrl: s3://', () => {
  it('uses the given client, bucket and prefix', async () => {
    // Act
    const store = await openStoreFromUrl('s3://repo-bucket/team/prod', { s3Client: s3.client() });
    await store.put('config', text('hello'));
    // Assess
    assert.equal(store.location, 's3://repo-bucket/team/prod/');
    const raw = await s3.client().send(new GetObjectCommand({ Bucket: 'repo-bucket', Key: 'team/prod/config' }));
    assert.equal(await raw.Body!.transformToString(), 'hello');
  });

  it('builds a client from the environment, with TENDER_S3_ENDPOINT for S3-compatible servers', async () => {
    // Prepare: the default credential chain reads the process environment.
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
    process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
    try {
      // Act
      const store = await openStoreFromUrl('s3://repo-bucket/from-env', { env: { TENDER_S3_ENDPOINT: s3.endpoint } });
      await store.put('x', text('y'));
      // Assess
      assert.equal(Buffer.from(await store.get('x')).toString(), 'y');
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });
});

describe('openStoreFromUrl: azblob://', () => {
  it('uses TENDER_AZURE_STORAGE_CONNECTION_STRING (Azurite)', async () => {
    // Act
    const store = await openStoreFromUrl(`azblob://${az.account}/backups/vm-repo`, {
      env: { TENDER_AZURE_STORAGE_CONNECTION_STRING: az.connectionString },
    });
    await store.put('config', text('az'));
    // Assess
    assert.equal(store.location, `azblob://${az.account}/backups/vm-repo/`);
    const svc = BlobServiceClient.fromConnectionString(az.connectionString);
    assert.equal((await svc.getContainerClient('backups').getBlockBlobClient('vm-repo/config').downloadToBuffer()).toString(), 'az');
  });

  it('uses a given BlobServiceClient', async () => {
    // Act
    const store = await openStoreFromUrl(`azblob://${az.account}/backups`, {
      blobServiceClient: BlobServiceClient.fromConnectionString(az.connectionString),
    });
    await store.put('top', text('t'));
    // Assess
    assert.equal(Buffer.from(await store.get('top')).toString(), 't');
  });

  it('falls back to DefaultAzureCredential without contacting anything at open', async () => {
    // Act
    const store = await openStoreFromUrl('azblob://prodaccount/backups/x', { env: {} });
    // Assess
    assert.equal(store.location, 'azblob://prodaccount/backups/x/');
  });

  it('refuses a connection string for another account', async () => {
    await assert.rejects(
      openStoreFromUrl('azblob://otheraccount/backups', { env: { TENDER_AZURE_STORAGE_CONNECTION_STRING: az.connectionString } }),
      (err: Error) => err.name === 'ConfigError' && /otheraccount/.test(err.message) && /devstoreaccount1/.test(err.message),
    );
  });
});

describe('openStoreFromUrl: bad URLs', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['/var/backups', /no scheme.*file:\/var\/backups/],
    ['C:\\backups', /no scheme/],
    ['ftp://host/x', /"ftp:" is not supported/],
    ['file://nas/share', /local folders only/],
    ['file:', /names no folder/],
    ['s3:bucket/x', /two slashes/],
    ['s3://', /not a valid S3 bucket name/],
    ['s3://My_Bucket/x', /"My_Bucket" is not a valid S3 bucket name/],
    ['s3://bucket/x?versionId=1', /no query/],
    ['azblob://acct', /names no container/],
    ['azblob://Acct/c', /not a valid storage account name/],
    ['azblob://acct/Bad--Name', /not a valid container name/],
  ];
  for (const [url, message] of cases) {
    it(`rejects "${url}" with a ConfigError saying why`, async () => {
      await assert.rejects(openStoreFromUrl(url), (err: Error) => {
        assert.equal(err.name, 'ConfigError');
        assert.match(err.message, message);
        assert.match(err.message, /examples: file:/);
        return true;
      });
    });
  }

  it('keeps credentials pasted into a URL out of the message', async () => {
    await assert.rejects(openStoreFromUrl('s3://AKIA:hunter2@bucket/x'), (err: Error) => {
      assert.equal(err.name, 'ConfigError');
      assert.match(err.message, /never go in the URL/);
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    });
  });

  it('rejects a TENDER_S3_ENDPOINT that is not an http(s) URL', async () => {
    await assert.rejects(openStoreFromUrl('s3://bucket/x', { env: { TENDER_S3_ENDPOINT: 'localhost:9000' } }), {
      name: 'ConfigError',
      message: /TENDER_S3_ENDPOINT/,
    });
  });
});

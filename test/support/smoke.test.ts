import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startAzurite } from './azurite.js';
import { startS3Server } from './s3-server.js';
import { PutObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { BlobServiceClient } from '@azure/storage-blob';

test('local S3 server and Azurite start and store an object', async () => {
  const s3 = await startS3Server(['b']);
  const az = await startAzurite();
  try {
    const c = s3.client();
    await c.send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: 'hello' }));
    const got = await c.send(new GetObjectCommand({ Bucket: 'b', Key: 'k' }));
    assert.equal(await got.Body!.transformToString(), 'hello');
    const svc = BlobServiceClient.fromConnectionString(az.connectionString);
    const cont = svc.getContainerClient('smoke');
    await cont.create();
    await cont.getBlockBlobClient('x').upload('hi', 2);
    const buf = await cont.getBlockBlobClient('x').downloadToBuffer();
    assert.equal(buf.toString(), 'hi');
  } finally {
    await az.stop();
    await s3.stop();
  }
});

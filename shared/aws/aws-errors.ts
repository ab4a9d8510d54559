// One place that turns what the AWS SDK threw into Tender's named errors, so
// the state machine's Retry/Catch (which match on names) see the same error
// whatever service failed. Messages say what failed and what to do.

import {
  AccessDeniedError,
  CapacityError,
  ConfigError,
  NotFoundError,
  TenderError,
  TransientError,
  ValidationError,
  toError,
} from '../core/errors.js';

interface AwsLikeError extends Error {
  $metadata?: { httpStatusCode?: number };
  $fault?: 'client' | 'server';
  $retryable?: unknown;
  code?: string;
  Code?: string;
}

const THROTTLING = new Set([
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'SlowDown',
  'ProvisionedThroughputExceededException',
  'AWS.SimpleQueueService.RequestThrottled',
]);

const SERVER_SIDE = new Set([
  'InternalError',
  'InternalFailure',
  'InternalServerError',
  'InternalServerException',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'Unavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
]);

const NETWORK = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET']);

/** EC2 capacity errors: another try, later or in another AZ/type, may well succeed. */
const CAPACITY = new Set(['InsufficientInstanceCapacity', 'InsufficientCapacity', 'InsufficientHostCapacity', 'InsufficientReservedInstanceCapacity', 'InsufficientFreeAddressesInSubnet']);

const DENIED = new Set(['AccessDenied', 'AccessDeniedException', 'UnauthorizedOperation', 'AuthFailure', 'Forbidden', 'InvalidClientTokenId', 'ExpiredToken', 'ExpiredTokenException', 'CredentialsProviderError']);

export function awsErrorName(thrown: unknown): string {
  const e = thrown as AwsLikeError;
  return e?.Code ?? e?.name ?? e?.code ?? 'Error';
}

function status(thrown: unknown): number | undefined {
  return (thrown as AwsLikeError)?.$metadata?.httpStatusCode;
}

export function isAwsThrottling(thrown: unknown): boolean {
  return THROTTLING.has(awsErrorName(thrown)) || status(thrown) === 429;
}

export function isAwsTransient(thrown: unknown): boolean {
  const err = thrown as AwsLikeError;
  if (err instanceof TenderError) return err.retryable;
  const name = awsErrorName(err);
  const st = status(err);
  return isAwsThrottling(err) || SERVER_SIDE.has(name) || (st !== undefined && st >= 500) || NETWORK.has(err?.code ?? '') || NETWORK.has(name);
}

/** `InvalidInstanceID.NotFound`, `InvalidSnapshot.NotFound`, `NoSuchKey`, SQS's non-existent queue, HTTP 404. */
export function isAwsNotFound(thrown: unknown): boolean {
  const name = awsErrorName(thrown);
  return (
    /\.NotFound$|NotFound$|^NoSuchKey$|^ParameterNotFound$|^InvalidInstanceId$/.test(name) ||
    name === 'AWS.SimpleQueueService.NonExistentQueue' ||
    name === 'QueueDoesNotExist' ||
    name === 'InvalidInstanceID.Malformed' ||
    status(thrown) === 404
  );
}

/**
 * Normalises one SDK error. `what` names the call and its target ("ec2:RunInstances
 * for VM i-0abc"); `fix` is appended to access-denied messages (which permission).
 */
export function normaliseAwsError(thrown: unknown, what: string, fix?: string): Error {
  const err = toError(thrown) as AwsLikeError;
  if (err instanceof TenderError) return err;
  const name = awsErrorName(err);
  const detail = err.message && err.message !== name ? `${name}: ${err.message}` : name;
  if (CAPACITY.has(name)) {
    return new CapacityError(`${what}: AWS has no capacity for it right now (${detail}) — it is retried; if it persists, choose another instance type in worker.profiles or another subnet/AZ in worker.placement`, { cause: err });
  }
  if (isAwsTransient(err)) {
    return new TransientError(`${what} failed transiently (${detail}); it is retried`, { cause: err });
  }
  if (name === 'IdempotentParameterMismatch') {
    return new ValidationError(
      `${what}: a request with the same client token but different parameters was already made (${detail}) — the step's input changed between attempts; remove what the first attempt made (tags tender:run / tender:vm) or start a new run`,
      { cause: err },
    );
  }
  if (DENIED.has(name) || status(err) === 403) {
    return new AccessDeniedError(`${what}: access denied (${detail})${fix ? ` — ${fix}` : ' — check the IAM role of this step'}`, { cause: err });
  }
  if (isAwsNotFound(err)) return new NotFoundError(`${what}: not found (${detail})`, { cause: err });
  if (name === 'InvalidParameterValue' || name === 'InvalidParameterCombination' || name === 'ValidationException' || name === 'InvalidParameter' || name === 'MissingParameter') {
    return new ConfigError(`${what}: AWS rejected the request (${detail}) — check the policy's worker settings and the deployment's settings`, { cause: err });
  }
  return new Error(`${what} failed (${detail})`, { cause: err });
}

/** Runs one SDK call and normalises what it throws. */
export async function awsCall<T>(what: string, fn: () => Promise<T>, fix?: string): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw normaliseAwsError(e, what, fix);
  }
}

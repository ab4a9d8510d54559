// What Azure Resource Manager and the storage data plane throw, turned into
// Tender's named errors at the adapter boundary: the orchestrator retries by
// name, so a 429 must arrive as TransientError and a full region as
// CapacityError, never as a bare RestError.

import {
  AccessDeniedError,
  CapacityError,
  ConfigError,
  LockedError,
  NotFoundError,
  TenderError,
  TransientError,
  toError,
} from '../core/errors.js';

interface RestLike extends Error {
  statusCode?: number;
  code?: string;
  details?: { errorCode?: string; error?: { code?: string } };
}

/** The service's error code: ARM puts it in `code`, storage in `details.errorCode`. */
export function azureCodeOf(thrown: unknown): string | undefined {
  const e = thrown as RestLike | undefined;
  return e?.details?.errorCode ?? e?.details?.error?.code ?? e?.code;
}

export function azureStatusOf(thrown: unknown): number | undefined {
  return (thrown as RestLike | undefined)?.statusCode;
}

const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'REQUEST_SEND_ERROR', 'UND_ERR_SOCKET']);

/** Codes ARM uses when the region has no room for the size right now: another try later (or elsewhere) may fit. */
const CAPACITY_CODES = new Set(['AllocationFailed', 'ZonalAllocationFailed', 'OverconstrainedAllocationRequest', 'OverconstrainedZonalAllocationRequest', 'SkuNotAvailable']);

/** Codes of an operation that collided with another on the same resource: it goes away by itself. */
const BUSY_CODES = new Set(['AnotherOperationInProgress', 'OperationPreempted', 'RetryableError', 'Conflict', 'ServerBusy', 'OperationTimedOut', 'InternalServerError', 'InternalError', 'TooManyRequests', 'SubscriptionRequestsThrottled']);

export function isNotFound(thrown: unknown): boolean {
  const code = azureCodeOf(thrown);
  return azureStatusOf(thrown) === 404 || code === 'ResourceNotFound' || code === 'NotFound' || code === 'ResourceGroupNotFound' || code === 'BlobNotFound' || code === 'QueueNotFound' || code === 'ContainerNotFound';
}

/**
 * Maps what an Azure SDK threw while doing `what` to a named Tender error.
 * `what` names the operation and the resource; messages add what to do.
 */
export function normaliseArmError(thrown: unknown, what: string): Error {
  const err = toError(thrown) as RestLike;
  if (err instanceof TenderError) return err;
  const status = err.statusCode;
  const code = azureCodeOf(err);
  const detail = `${status ?? 'no response'}${code ? ` ${code}` : ''}: ${err.message.split('\n')[0]}`;

  if (code && CAPACITY_CODES.has(code)) {
    return new CapacityError(`${what}: Azure has no capacity for it right now (${detail}) — it is retried; if it keeps failing choose another size in worker.profiles or another zone`, { cause: err });
  }
  if (code === 'OperationNotAllowed' && /quota|limit/i.test(err.message)) {
    return new CapacityError(
      `${what}: the subscription's vCPU quota is used up (${detail}) — it is retried as other workers finish; raise the quota for this VM family in the region or lower the policy's maxConcurrency`,
      { cause: err },
    );
  }
  if (code === 'OperationNotAllowed' && /SAS|active access|ActiveSAS/i.test(err.message)) {
    return new LockedError(`${what}: the resource still has an active SAS (${detail}) — access is being revoked; it is retried`, { cause: err });
  }
  if (code === 'PropertyChangeNotAllowed' || code === 'InvalidResourceReference') {
    return new ConfigError(`${what}: Azure refused the change (${detail}) — a resource of that name exists with other settings; delete it or fix the settings`, { cause: err });
  }
  if (status === 429 || (status !== undefined && status >= 500) || (code !== undefined && BUSY_CODES.has(code)) || status === 409) {
    return new TransientError(`${what} failed transiently (${detail}); it is retried`, { cause: err });
  }
  if (err.name === 'AbortError' || err.name === 'TimeoutError' || (err.code !== undefined && NETWORK_CODES.has(err.code))) {
    return new TransientError(`${what}: no answer from Azure (${detail}); it is retried`, { cause: err });
  }
  if (status === 401 || status === 403 || code === 'AuthorizationFailed' || code === 'AuthenticationFailed' || code === 'LinkedAuthorizationFailed' || err.name === 'CredentialUnavailableError' || err.name === 'AuthenticationError') {
    return new AccessDeniedError(
      `${what} was denied (${detail}) — the Function app's managed identity needs the roles docs/azure.md lists under "Permissions" (Contributor on the Tender resource group, Reader on the protected VMs' groups, subnet join)`,
      { cause: err },
    );
  }
  if (isNotFound(err)) return new NotFoundError(`${what}: not found (${detail})`, { cause: err });
  if (status === 400 || code === 'InvalidParameter' || code === 'BadRequest' || code === 'InvalidTemplateDeployment') {
    return new ConfigError(`${what}: Azure refused the request (${detail}) — check the Azure settings and the policy's worker placement`, { cause: err });
  }
  return new Error(`${what} failed (${detail})`, { cause: err });
}

/** Runs `fn` and rethrows anything as a named error; `what` names the operation. */
export async function arm<T>(what: string, fn: () => PromiseLike<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw normaliseArmError(e, what);
  }
}

/** Like arm(), but a 404 yields undefined: reads of things that may be gone. */
export async function armMaybe<T>(what: string, fn: () => PromiseLike<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw normaliseArmError(e, what);
  }
}

"""Every limit Kelpie enforces, in one place, with the relationships between them asserted.

Storage limits are FoundationDB's, so that a layer written against Kelpie's store would fit
FoundationDB unchanged, and every backend enforces them identically.
"""

from __future__ import annotations

from typing import Final

# --- storage: FoundationDB's limits -------------------------------------------------------------
KEY_BYTES_LIMIT: Final = 10_000
VALUE_BYTES_LIMIT: Final = 100_000
TRANSACTION_BYTES_LIMIT: Final = 10_000_000
TRANSACTION_DURATION_S_LIMIT: Final = 5.0

# How long a store keeps the history of committed writes used to detect conflicts. It must exceed
# the transaction time limit, or a live transaction could miss a conflict; a transaction whose read
# version falls outside it fails with TransactionTooOld instead (safe, retryable).
CONFLICT_WINDOW_S: Final = 10.0

# --- storage: retries ---------------------------------------------------------------------------
TRANSACTION_ATTEMPTS_LIMIT: Final = 30
RETRY_BACKOFF_S_INITIAL: Final = 0.001
RETRY_BACKOFF_S_MAX: Final = 0.5

# --- storage: group commit and connections ------------------------------------------------------
COMMIT_BATCH_TRANSACTIONS_LIMIT: Final = 512
COMMIT_BATCH_BYTES_LIMIT: Final = 32_000_000
COMMIT_QUEUE_TRANSACTIONS_LIMIT: Final = 20_000
RANGE_READ_BATCH_ROWS: Final = 1_000
SQLITE_READ_CONNECTIONS_LIMIT: Final = 64
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
POSTGRES_CONNECTIONS_LIMIT: Final = 40
POSTGRES_CONNECT_TIMEOUT_S: Final = 10.0
POSTGRES_SERIALIZATION_RETRIES_LIMIT: Final = 50

# --- blob layer ---------------------------------------------------------------------------------
BLOB_CHUNK_BYTES: Final = 90_000
# A blob whose chunks fit in one transaction is written atomically in one; a larger one is written
# in several transactions and published by a final one that switches its header.
BLOB_SINGLE_TRANSACTION_BYTES_LIMIT: Final = 8_000_000
BLOB_BYTES_LIMIT: Final = 4_000_000_000

# --- actors -------------------------------------------------------------------------------------
ACTOR_ID_PART_CHARS_LIMIT: Final = 512
ACTOR_MAILBOX_MESSAGES_LIMIT: Final = 10_000
ACTOR_IDLE_TIMEOUT_S_DEFAULT: Final = 900.0
ACTOR_TURN_TIMEOUT_S_DEFAULT: Final = 300.0
ACTOR_REQUEST_TIMEOUT_S_DEFAULT: Final = 60.0
ACTOR_STATE_BYTES_LIMIT: Final = 1_000_000  # larger state belongs in ctx.kv or a blob
ACTOR_TURN_WRITES_BYTES_LIMIT: Final = 8_000_000  # state + kv writes in one commit
ACTOR_ACTIVATIONS_LIMIT: Final = 2_000_000
ACTOR_TIMERS_PER_ACTOR_LIMIT: Final = 100
ACTOR_REMINDERS_PER_ACTOR_LIMIT: Final = 100
ACTOR_REMINDER_PERIOD_S_MIN: Final = 1.0
NODE_HEARTBEAT_INTERVAL_S_DEFAULT: Final = 1.0
NODE_FAILURE_TIMEOUT_S_DEFAULT: Final = 10.0
IDLE_SWEEP_INTERVAL_S_MAX: Final = 30.0
REMINDER_POLL_INTERVAL_S_DEFAULT: Final = 1.0
REMINDER_BATCH_LIMIT: Final = 1_000

# --- server -------------------------------------------------------------------------------------
SERVER_SHUTDOWN_GRACE_S: Final = 10.0

assert KEY_BYTES_LIMIT < VALUE_BYTES_LIMIT < TRANSACTION_BYTES_LIMIT
assert CONFLICT_WINDOW_S > TRANSACTION_DURATION_S_LIMIT
assert 0 < RETRY_BACKOFF_S_INITIAL < RETRY_BACKOFF_S_MAX
assert BLOB_CHUNK_BYTES + KEY_BYTES_LIMIT <= VALUE_BYTES_LIMIT + KEY_BYTES_LIMIT
assert BLOB_CHUNK_BYTES <= VALUE_BYTES_LIMIT
assert BLOB_SINGLE_TRANSACTION_BYTES_LIMIT + 2 * VALUE_BYTES_LIMIT < TRANSACTION_BYTES_LIMIT
assert COMMIT_BATCH_BYTES_LIMIT >= TRANSACTION_BYTES_LIMIT
assert POSTGRES_CONNECTIONS_LIMIT >= 2
assert ACTOR_STATE_BYTES_LIMIT <= ACTOR_TURN_WRITES_BYTES_LIMIT < TRANSACTION_BYTES_LIMIT
assert NODE_FAILURE_TIMEOUT_S_DEFAULT >= 3 * NODE_HEARTBEAT_INTERVAL_S_DEFAULT

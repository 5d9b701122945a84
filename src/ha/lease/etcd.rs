//! etcd v3 lease store: one key per VIP, written only by transactions that compare the
//! key's revision, and attached to an etcd lease (TTL) so it disappears if every host dies.
//!
//! - `get`: the key; version = its `mod_revision`.
//! - `create`: `txn(create_revision(key) == 0) put`.
//! - `update`: `txn(mod_revision(key) == prev.version) put`; a failed compare is `Conflict`.
//! - A planned release stores its [`HandoverNote`] in the value's `handover` field.
//! - Every write that names a holder first grants a fresh etcd lease with
//!   `TTL = ceil(lease duration)` and attaches the key to it. A superseded etcd lease just
//!   runs out (no key is attached to it any more). This replaces a keep-alive stream: two
//!   round trips per renewal either way, and there is no stream state to repair after an
//!   etcd restart.
//!
//! Safety does not rest on the TTL: ownership is judged by [`crate::ha::ownership`] from
//! revisions seen on this host's clock. The TTL only has to be no shorter than the lease
//! duration, so that etcd deleting the key (which lets a standby create it at once) never
//! happens before the holder's renew deadline: the TTL starts when etcd grants it, after
//! the holder sent the write its deadline counts from.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{HandoverNote, LeaseError, LeaseRecord, LeaseStore};
use crate::config::plan::LockPlan;
use crate::ha::timing::Timing;

/// What the key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    holder: Option<String>,
    duration_ms: u64,
    transitions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handover: Option<HandoverNote>,
}

pub struct EtcdStore {
    endpoints: Vec<String>,
    key: String,
    client: Option<Client>,
}

impl EtcdStore {
    pub fn new(endpoints: Vec<String>, key: String) -> EtcdStore {
        EtcdStore {
            endpoints,
            key,
            client: None,
        }
    }

    async fn client(&mut self) -> Result<&mut Client, LeaseError> {
        if self.client.is_none() {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5));
            let client = Client::connect(&self.endpoints, Some(options))
                .await
                .map_err(map_error)?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| LeaseError::Unavailable("no etcd client".into()))
    }

    async fn write(
        &mut self,
        guard: Compare,
        holder: Option<&str>,
        duration: Duration,
        transitions: u32,
        handover: Option<HandoverNote>,
    ) -> Result<LeaseRecord, LeaseError> {
        let value = Value {
            holder: holder.map(str::to_owned),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            transitions,
            handover,
        };
        let bytes = serde_json::to_vec(&value).map_err(|e| LeaseError::Invalid(e.to_string()))?;
        let key = self.key.clone();
        let client = self.client().await?;
        let options = if holder.is_some() {
            let ttl = i64::try_from(duration.as_millis().div_ceil(1000))
                .unwrap_or(i64::MAX)
                .max(1);
            let lease = client.lease_grant(ttl, None).await.map_err(map_error)?;
            Some(PutOptions::new().with_lease(lease.id()))
        } else {
            None
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(key, bytes, options)]);
        let response = client.txn(txn).await.map_err(map_error)?;
        if !response.succeeded() {
            return Err(LeaseError::Conflict);
        }
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| LeaseError::Invalid("txn response without header".into()))?;
        Ok(LeaseRecord {
            holder: value.holder,
            version: revision.to_string(),
            duration,
            transitions,
            handover,
        })
    }
}

impl LeaseStore for EtcdStore {
    fn retune(&mut self, lock: &LockPlan, _timing: &Timing) {
        if let LockPlan::Etcd(lock) = lock
            && lock.endpoints != self.endpoints
        {
            self.endpoints.clone_from(&lock.endpoints);
            // Reconnects to the new endpoints at the next call.
            self.client = None;
        }
    }

    fn endpoint(&self) -> String {
        self.endpoints.join(",")
    }

    async fn get(&mut self) -> Result<Option<LeaseRecord>, LeaseError> {
        let key = self.key.clone();
        let client = self.client().await?;
        let response = client.get(key, None).await.map_err(map_error)?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let value: Value = serde_json::from_slice(kv.value()).map_err(|e| {
            LeaseError::Invalid(format!("key {} does not hold a lease: {e}", self.key))
        })?;
        Ok(Some(LeaseRecord {
            holder: value.holder,
            version: kv.mod_revision().to_string(),
            duration: Duration::from_millis(value.duration_ms),
            transitions: value.transitions,
            handover: value.handover,
        }))
    }

    async fn create(
        &mut self,
        holder: &str,
        duration: Duration,
    ) -> Result<LeaseRecord, LeaseError> {
        let guard = Compare::create_revision(self.key.clone(), CompareOp::Equal, 0);
        self.write(guard, Some(holder), duration, 0, None).await
    }

    async fn update(
        &mut self,
        prev: &LeaseRecord,
        holder: Option<&str>,
        duration: Duration,
        handover: Option<HandoverNote>,
    ) -> Result<LeaseRecord, LeaseError> {
        let revision: i64 = prev
            .version
            .parse()
            .map_err(|_| LeaseError::Invalid(format!("bad etcd revision {:?}", prev.version)))?;
        let guard = Compare::mod_revision(self.key.clone(), CompareOp::Equal, revision);
        let changes_holder = holder.is_some() && holder != prev.holder.as_deref();
        let transitions = prev.transitions + u32::from(changes_holder);
        self.write(guard, holder, duration, transitions, handover)
            .await
    }
}

fn map_error(e: etcd_client::Error) -> LeaseError {
    use etcd_client::Error;
    // gRPC status codes (tonic is not a direct dependency).
    const INVALID_ARGUMENT: i32 = 3;
    const PERMISSION_DENIED: i32 = 7;
    const FAILED_PRECONDITION: i32 = 9;
    const OUT_OF_RANGE: i32 = 11;
    const UNAUTHENTICATED: i32 = 16;
    match e {
        Error::GRpcStatus(status) => match i32::from(status.code()) {
            PERMISSION_DENIED | UNAUTHENTICATED => LeaseError::Denied(status.message().to_owned()),
            INVALID_ARGUMENT | FAILED_PRECONDITION | OUT_OF_RANGE => {
                LeaseError::Invalid(status.message().to_owned())
            }
            _ => LeaseError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
        },
        Error::InvalidArgs(m) => LeaseError::Invalid(m),
        Error::InvalidUri(e) => LeaseError::Invalid(e.to_string()),
        other => LeaseError::Unavailable(other.to_string()),
    }
}

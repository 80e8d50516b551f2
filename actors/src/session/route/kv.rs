//! The client namespace of the key-value store: `KvGet`, `KvPut`, `KvDelete`, `KvList`.
//! Writes carry their audit entry into the ledger, durable with them.

use super::{Dispatch, call, write};
use crate::protocol::{KvValue, Removed, Written};
use crate::store::{self, CLIENT_NAMESPACE};

/// `KvList` returns at most this many keys when no limit is given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// Upper bound of `KvList` sizes.
const MAX_LISTING: usize = 10_000;

fn ns() -> String {
    CLIENT_NAMESPACE.to_owned()
}

/// `KvGet`.
pub(super) fn get(d: Dispatch<'_>, key: String) {
    let get = store::Get {
        namespace: ns(),
        key: key.clone(),
    };
    let ask = call(&d.session.deps.services.store, get, d.timeout());
    d.run(async move {
        Ok(KvValue {
            value: ask.await??,
            key,
        })
    });
}

/// `KvPut`: answered once durable.
pub(super) fn put(d: Dispatch<'_>, key: String, value: Vec<u8>) {
    let (store, t) = (d.session.deps.services.store.clone(), d.timeout());
    let bytes = value.len() as u64;
    d.run_written(move |entry| {
        let put = store::Put {
            namespace: ns(),
            key: key.clone(),
            value,
            audit: entry,
        };
        let ask = write(&store, store::Write::Put(put), t);
        async move {
            ask.await?;
            Ok(Written { target: key, bytes })
        }
    });
}

/// `KvDelete`: answered once durable.
pub(super) fn delete(d: Dispatch<'_>, key: String) {
    let (store, t) = (d.session.deps.services.store.clone(), d.timeout());
    d.run_written(move |entry| {
        let delete = store::Delete {
            namespace: ns(),
            key: key.clone(),
            audit: entry,
        };
        let ask = write(&store, store::Write::Delete(delete), t);
        async move {
            let removed = ask.await?;
            Ok(Removed {
                target: key,
                removed,
            })
        }
    });
}

/// `KvList`: at most [`MAX_LISTING`] keys.
pub(super) fn list(d: Dispatch<'_>, prefix: String, limit: Option<usize>) {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LISTING);
    let list = store::List {
        namespace: ns(),
        prefix,
        limit,
    };
    let ask = call(&d.session.deps.services.store, list, d.timeout());
    d.run(async move { Ok(ask.await??) });
}

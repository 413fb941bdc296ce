//! The epoch ticker: every tick, for each crowd, asks the store to cut or refresh an
//! epoch (the store applies [`crowds_proto::roster`] under the crowd's lock, so only one
//! of several replicated blenders does it), then picks up the latest signed document,
//! whoever signed it. The clock is read here and passed in; nothing here decides who
//! is a member.

use crate::state::{lock, Published, State, DELTA_BASES};
use crate::store::{Store, Tick};
use crowds_net::net::now_ms;
use crowds_proto::document::CrowdDocument;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn tick(
    state: Arc<State>,
    store: Arc<Mutex<Store>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        advance(&state, &store).await;
    }
}

/// One turn for every crowd: cut or refresh an epoch if due (unless another blender is
/// doing it), then pick up the latest stored document, whoever signed it.
pub(crate) async fn advance(state: &Arc<State>, store: &Arc<Mutex<Store>>) {
    let mut published = false;
    for (name, crowd) in &state.crowds {
        let config = crowd.config.clone();
        let known = crowd
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| (p.epoch, p.issued_at));
        let (store, signer, crowd_name) = (store.clone(), state.clone(), name.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut store = lock(&store);
            let sign = |doc: &CrowdDocument| doc.sign(&signer.key).map_err(|e| e.to_string());
            let now = now_ms();
            let tick = store.tick_after(&config, now, signer.disrupted_at(now), &sign)?;
            let latest = store.latest_document(&crowd_name, known)?;
            Ok::<_, crate::store::StoreError>((tick, latest))
        })
        .await;
        let (tick, latest) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                state.store_failed();
                tracing::error!(crowd = %name, "cannot advance the crowd: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!(crowd = %name, "epoch task failed: {e}");
                continue;
            }
        };
        if let Tick::NewEpoch { epoch, members } = tick {
            tracing::info!(crowd = %name, epoch, members, "new epoch");
            state.stats.epochs.fetch_add(1, Ordering::Relaxed);
        }
        let Some(latest) = latest else { continue };
        let Some(bytes) = latest.bytes else { continue };
        match CrowdDocument::verify(&bytes, &state.key.public()) {
            Ok(document) => {
                let old = crowd
                    .published
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(Published {
                        bytes: Arc::new(bytes),
                        etag: format!("\"{}-{}\"", latest.epoch, latest.issued_at),
                        epoch: latest.epoch,
                        issued_at: latest.issued_at,
                        keys: document.members.iter().map(|m| m.key).collect(),
                        document: Arc::new(document),
                    });
                lock(&crowd.deltas).clear();
                published = true;
                if let Some(old) = old {
                    let mut history = lock(&crowd.history);
                    history.push_back(old.document);
                    while history.len() > DELTA_BASES {
                        history.pop_front();
                    }
                }
            }
            // Another blender with a different key shares this database: refuse to
            // serve what jondos would reject anyway.
            Err(e) => tracing::error!(
                crowd = %name,
                "the stored document does not verify with this blender's key ({e}); \
                 blenders sharing a database must share the data directory's key"
            ),
        }
    }
    if published {
        state.refresh_known();
    }
}

//! Certificate trust against a real TLS endpoint with a self-signed certificate, the way
//! ONTAP and the simulator ship by default.

mod support;

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use ontap_client::{OntapClient, TlsTrust};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use stasis_core::storage::StorageError;
use support::config;

struct TlsServer {
    base_url: String,
    cert_pem: String,
    handle: axum_server::Handle,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Serves `/api/cluster` over TLS on 127.0.0.1 with a self-signed certificate for `names`.
async fn start_tls_server(names: &[&str]) -> TlsServer {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert_der: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    // An explicit provider: the workspace may enable more than one, and then rustls cannot pick.
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key)
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/api/cluster",
        get(|| async { Json(serde_json::json!({"version": {"full": "NetApp Release 9.14.1"}})) }),
    );
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_config)),
    )
    .handle(handle.clone());
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    TlsServer {
        base_url: format!("https://{addr}"),
        cert_pem: certified.cert.pem(),
        handle,
    }
}

fn write_pem(dir: &tempfile::TempDir, name: &str, pem: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn a_pinned_self_signed_certificate_is_trusted_whatever_name_it_holds() {
    // Like ONTAP's own certificate: it names the cluster, not the address used to reach it.
    let server = start_tls_server(&["cluster1.example"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.tls = TlsTrust::PinnedCertificate(write_pem(&dir, "cluster.pem", &server.cert_pem));
    OntapClient::new(cfg)
        .unwrap()
        .warm_up()
        .await
        .expect("the pinned certificate is accepted");
}

#[tokio::test]
async fn the_default_refuses_a_self_signed_certificate_as_auth() {
    let server = start_tls_server(&["127.0.0.1"]).await;
    let client = OntapClient::new(config(&server.base_url)).unwrap();
    let error = client.warm_up().await.unwrap_err();
    assert!(matches!(error, StorageError::Auth { .. }), "{error:?}");
}

#[tokio::test]
async fn a_different_pinned_certificate_is_refused_as_auth() {
    let server = start_tls_server(&["127.0.0.1"]).await;
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.tls = TlsTrust::PinnedCertificate(write_pem(&dir, "other.pem", &other.cert.pem()));
    let error = OntapClient::new(cfg).unwrap().warm_up().await.unwrap_err();
    assert!(matches!(error, StorageError::Auth { .. }), "{error:?}");
}

#[tokio::test]
async fn a_ca_file_is_trusted_with_host_name_checks() {
    let server = start_tls_server(&["127.0.0.1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.tls = TlsTrust::CaFile(write_pem(&dir, "ca.pem", &server.cert_pem));
    OntapClient::new(cfg)
        .unwrap()
        .warm_up()
        .await
        .expect("signed by the trusted CA, name matches");

    // The same CA, but the certificate names another host than the one dialled.
    let server = start_tls_server(&["cluster1.example"]).await;
    let mut cfg = config(&server.base_url);
    cfg.tls = TlsTrust::CaFile(write_pem(&dir, "ca2.pem", &server.cert_pem));
    let error = OntapClient::new(cfg).unwrap().warm_up().await.unwrap_err();
    assert!(matches!(error, StorageError::Auth { .. }), "{error:?}");
}

#[tokio::test]
async fn insecure_mode_accepts_any_certificate() {
    let server = start_tls_server(&["127.0.0.1"]).await;
    let mut cfg = config(&server.base_url);
    cfg.tls = TlsTrust::InsecureAcceptAny;
    OntapClient::new(cfg)
        .unwrap()
        .warm_up()
        .await
        .expect("explicitly insecure");
}

//! `ceiling ADDR [CERT_DIR]`: the ceiling of row 4 of BENCHMARKS.md. The same HTTP stack as
//! thinghost (axum on hyper, tokio, rustls, `thinghost::http::serve`), with one route that
//! answers a constant: what a request costs before thinghost does anything. With CERT_DIR, TLS
//! with the development certificate of that directory. Prints the address it listens on.

use axum::Router;

/// The server's allocator (the memory meter over mimalloc): the ceiling runs the same stack on
/// the same allocator as `thinghost serve`.
#[global_allocator]
static ALLOCATOR: thinghost_extensions::meter::Meter = thinghost_extensions::meter::Meter;
use axum::routing::get;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, certs) = match &args[..] {
        [a] => (a.clone(), None),
        [a, d] => (a.clone(), Some(std::path::PathBuf::from(d))),
        _ => {
            eprintln!("usage: ceiling ADDR [CERT_DIR]");
            std::process::exit(2);
        }
    };
    let tls = certs.map(|dir| {
        let (cert, key, _) = thinghost::http::tls::dev_certificate(&dir).expect("a certificate");
        let config = thinghost::http::tls::server_config(
            thinghost::http::tls::read_chain(&cert).expect("a chain"),
            thinghost::http::tls::read_key(&key).expect("a key"),
            None,
        )
        .expect("a TLS configuration");
        tokio_rustls::TlsAcceptor::from(config)
    });
    let constant = || async { r#"{"rows":[{"result":42}]}"# };
    let router = Router::new().route("/{*path}", get(constant).post(constant));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("listens");
        println!(
            "listening on {}",
            listener.local_addr().expect("an address")
        );
        thinghost::http::serve(
            listener,
            router,
            tls,
            thinghost::http::Limits::default(),
            std::future::pending(),
        )
        .await;
    });
}

use lambda_runtime::Error;
use tasuki_core::lambda::{serve, Aws};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tasuki_core::telemetry::init();
    serve(Aws::from_env().await?.resolve_labels()).await
}

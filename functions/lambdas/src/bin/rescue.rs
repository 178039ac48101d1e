use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde::de::IgnoredAny;
use tasuki_core::lambda::Aws;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tasuki_core::telemetry::init();
    let rescue = Aws::from_env().await?.rescue().await?;
    // The scheduled event says nothing the sweep needs.
    run(service_fn(|_: LambdaEvent<IgnoredAny>| rescue.sweep(false))).await
}

use lambda_http::{run, service_fn, Body, Error, Request, Response};
use tasuki_core::handlers::webhook::WebhookRequest;
use tasuki_core::lambda::Aws;

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tasuki_core::telemetry::init();
    let webhook = Aws::from_env().await?.webhook().await?;
    run(service_fn(|request: Request| {
        let webhook = &webhook;
        async move {
            let answer = webhook
                .handle(WebhookRequest {
                    event: header(&request, "x-github-event"),
                    delivery: header(&request, "x-github-delivery"),
                    signature: header(&request, "x-hub-signature-256"),
                    body: request.body().as_ref().to_vec(),
                })
                .await;
            Response::builder()
                .status(answer.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_string(&answer)?))
                .map_err(Error::from)
        }
    }))
    .await
}

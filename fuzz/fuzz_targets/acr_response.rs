//! libFuzzer target: [`aca_reconciler::fuzz::acr_response`] must not panic on any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aca_reconciler::fuzz::acr_response(data);
});

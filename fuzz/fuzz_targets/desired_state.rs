//! libFuzzer target: [`aca_reconciler::fuzz::desired_state`] must not panic on any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aca_reconciler::fuzz::desired_state(data);
});

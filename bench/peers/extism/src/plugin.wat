;; The Extism side of the peer benchmark: the same small job as dax's hello-metrics plugin.
;; `run_query` reads its input through the Extism kernel; for `value:N` it returns `N` as its
;; output (the host parses the number), anything else fails with code 1.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  ;; bytes 0..6: the prefix; the input is copied to 64..
  (data (i32.const 0) "value:")

  (func (export "run_query") (result i32)
    (local $len i64) (local $i i64) (local $out i64) (local $n i64)
    (local.set $len (call $input_length))
    ;; bounded: a query longer than the buffer is refused
    (if (i64.gt_u (local.get $len) (i64.const 4096)) (then (return (i32.const 2))))
    (if (i64.lt_u (local.get $len) (i64.const 6)) (then (return (i32.const 1))))
    ;; copy the input into this module's memory
    (block $done
      (loop $copy
        (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
        (i32.store8
          (i32.add (i32.const 64) (i32.wrap_i64 (local.get $i)))
          (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $copy)))
    ;; check the prefix
    (local.set $i (i64.const 0))
    (block $ok
      (loop $cmp
        (br_if $ok (i64.ge_u (local.get $i) (i64.const 6)))
        (if (i32.ne
              (i32.load8_u (i32.wrap_i64 (local.get $i)))
              (i32.load8_u (i32.add (i32.const 64) (i32.wrap_i64 (local.get $i)))))
          (then (return (i32.const 1))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $cmp)))
    ;; output the rest
    (local.set $n (i64.sub (local.get $len) (i64.const 6)))
    (local.set $out (call $alloc (local.get $n)))
    (local.set $i (i64.const 0))
    (block $written
      (loop $store
        (br_if $written (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8
          (i64.add (local.get $out) (local.get $i))
          (i32.load8_u (i32.add (i32.const 70) (i32.wrap_i64 (local.get $i)))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $store)))
    (call $output_set (local.get $out) (local.get $n))
    (i32.const 0))
)

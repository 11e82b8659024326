// The cocotb top: each unit of examples/rtl once per parameter set that refsim's golden presets use.
//
// A cocotb bench picks its instance from the bundle's manifest (tb_units.py), so every preset runs
// on one compiled model: Verilator compiles this top once per simulator (twice with the planted
// RTL bug, `-DPLANT_RTL_BUG`) instead of once per parameter set. The instances are the units
// themselves; this file only wires their ports to the top, named <instance>_<port>.
//
//   instance      unit                 parameters            presets
//   dot_b4        int_dot_zp           BITS=4, ACC=32        gemm_w4a4
//   dot_b3        int_dot_zp           BITS=3, ACC=32        gemm_w3a3
//   sdr_g16_b16   sdr_group_encoder    G=16, B=16, KEEP=3    sdr_a16_g16
//   sdr_g32_b16   sdr_group_encoder    G=32, B=16, KEEP=3    sdr_a16_g32
//   sdr_g16_b8    sdr_group_encoder    G=16, B=8,  KEEP=3    sdr_w8_g16
//   sdr_g32_b8    sdr_group_encoder    G=32, B=8,  KEEP=3    sdr_w8_g32
`timescale 1ns/1ps
module refsim_units (
    input  wire               clk,
    input  wire               dot_b4_clear, dot_b4_valid,
    input  wire signed [3:0]  dot_b4_a,
    input  wire        [3:0]  dot_b4_w,
    input  wire signed [31:0] dot_b4_za, dot_b4_zw,
    output wire signed [31:0] dot_b4_raw, dot_b4_sum_a, dot_b4_sum_w, dot_b4_count, dot_b4_isum,
    input  wire               dot_b3_clear, dot_b3_valid,
    input  wire signed [2:0]  dot_b3_a,
    input  wire        [2:0]  dot_b3_w,
    input  wire signed [31:0] dot_b3_za, dot_b3_zw,
    output wire signed [31:0] dot_b3_raw, dot_b3_sum_a, dot_b3_sum_w, dot_b3_count, dot_b3_isum,
    input  wire [16*16-1:0]   sdr_g16_b16_x,
    output wire [16*4-1:0]    sdr_g16_b16_codes,
    output wire [3:0]         sdr_g16_b16_flag,
    input  wire [32*16-1:0]   sdr_g32_b16_x,
    output wire [32*4-1:0]    sdr_g32_b16_codes,
    output wire [3:0]         sdr_g32_b16_flag,
    input  wire [16*8-1:0]    sdr_g16_b8_x,
    output wire [16*4-1:0]    sdr_g16_b8_codes,
    output wire [3:0]         sdr_g16_b8_flag,
    input  wire [32*8-1:0]    sdr_g32_b8_x,
    output wire [32*4-1:0]    sdr_g32_b8_codes,
    output wire [3:0]         sdr_g32_b8_flag
);
    int_dot_zp #(.BITS(4), .ACC(32)) dot_b4 (
        .clk(clk), .clear(dot_b4_clear), .valid(dot_b4_valid), .a(dot_b4_a), .w(dot_b4_w),
        .za(dot_b4_za), .zw(dot_b4_zw), .raw(dot_b4_raw), .sum_a(dot_b4_sum_a), .sum_w(dot_b4_sum_w),
        .count(dot_b4_count), .isum(dot_b4_isum));
    int_dot_zp #(.BITS(3), .ACC(32)) dot_b3 (
        .clk(clk), .clear(dot_b3_clear), .valid(dot_b3_valid), .a(dot_b3_a), .w(dot_b3_w),
        .za(dot_b3_za), .zw(dot_b3_zw), .raw(dot_b3_raw), .sum_a(dot_b3_sum_a), .sum_w(dot_b3_sum_w),
        .count(dot_b3_count), .isum(dot_b3_isum));
    sdr_group_encoder #(.G(16), .B(16), .KEEP(3)) sdr_g16_b16 (
        .x(sdr_g16_b16_x), .codes(sdr_g16_b16_codes), .flag(sdr_g16_b16_flag));
    sdr_group_encoder #(.G(32), .B(16), .KEEP(3)) sdr_g32_b16 (
        .x(sdr_g32_b16_x), .codes(sdr_g32_b16_codes), .flag(sdr_g32_b16_flag));
    sdr_group_encoder #(.G(16), .B(8), .KEEP(3)) sdr_g16_b8 (
        .x(sdr_g16_b8_x), .codes(sdr_g16_b8_codes), .flag(sdr_g16_b8_flag));
    sdr_group_encoder #(.G(32), .B(8), .KEEP(3)) sdr_g32_b8 (
        .x(sdr_g32_b8_x), .codes(sdr_g32_b8_codes), .flag(sdr_g32_b8_flag));
endmodule

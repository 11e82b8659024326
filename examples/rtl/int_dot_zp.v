// Integer dot-product unit with zero-point correction (RPTQ W4A4 / W3A3 per-cluster sums).
//
// One output (m, n) of one cluster c at a time: the activation code a (signed, BITS bits) and
// the weight code w (unsigned, BITS bits) of each channel k in the cluster arrive one per
// clock with `valid`. The unit accumulates, modulo 2^ACC (a wrapping accumulator):
//
//   raw   = sum a*w        sum_a = sum a        sum_w = sum w        count = channels
//
// and forms the zero-point-corrected sum  sum (a - za)(w - zw)  without ever subtracting
// per element:
//
//   isum = raw - zw*sum_a - za*sum_w + count*za*zw          (mod 2^ACC)
//
// Golden stages (bundle gemm_w4a4 / gemm_w3a3): isum_raw, a_sum, w_sum, cluster_size, isum.
`timescale 1ns/1ps
module int_dot_zp #(
    parameter BITS = 4,
    parameter ACC  = 32
) (
    input  wire                  clk,
    input  wire                  clear,   // synchronous: start a new (c, m, n)
    input  wire                  valid,
    input  wire signed [BITS-1:0] a,      // activation code, two's complement
    input  wire        [BITS-1:0] w,      // weight code, unsigned
    input  wire signed [31:0]    za,      // activation zero point of the cluster (int32)
    input  wire signed [31:0]    zw,      // weight zero point of the output channel (int32)
    output reg  signed [ACC-1:0] raw,
    output reg  signed [ACC-1:0] sum_a,
    output reg  signed [ACC-1:0] sum_w,
    output reg  signed [ACC-1:0] count,
    output wire signed [ACC-1:0] isum
);
    wire signed [BITS:0] w_s = $signed({1'b0, w});  // the unsigned code as a signed operand

    always @(posedge clk) begin
        if (clear) begin
            raw <= 0; sum_a <= 0; sum_w <= 0; count <= 0;
        end else if (valid) begin
            raw   <= raw + a * w_s;
            sum_a <= sum_a + a;
            sum_w <= sum_w + w_s;
            count <= count + 1;
        end
    end

    wire signed [ACC-1:0] corrected = raw - zw * sum_a - za * sum_w + count * za * zw;
`ifdef PLANT_RTL_BUG
    // A deliberate one-bit error, for the test that shows a wrong RTL fails its testbench.
    assign isum = corrected ^ {{(ACC-1){1'b0}}, 1'b1};
`else
    assign isum = corrected;
`endif
endmodule

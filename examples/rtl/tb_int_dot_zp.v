// Self-checking testbench of int_dot_zp against a gemm_w4a4 / gemm_w3a3 golden bundle.
//
// Compile-time parameters (run_tb.py reads them from manifest.json): BITS, ACC, M, K, N, C.
// Run-time: +BUNDLE=<dir>. Reads the bundle's .hex files with $readmemh and checks, for every
// cluster c and output (m, n), the unit's raw, sum_a, sum_w, count and isum against the stages
// isum_raw, a_sum, w_sum, cluster_size and isum. Prints PASS or FAIL and ends with $fatal on
// any mismatch (vvp exits non-zero).
`timescale 1ns/1ps
module tb_int_dot_zp;
    parameter BITS = 4, ACC = 32, M = 8, K = 64, N = 8, C = 4;

    reg signed [BITS-1:0] a_codes   [0:M*K-1];
    reg        [BITS-1:0] w_codes   [0:K*N-1];
    reg        [7:0]      a_cluster [0:K-1];
    reg signed [31:0]     a_zero    [0:C-1];
    reg signed [31:0]     w_zero    [0:N-1];
    reg signed [31:0]     csize     [0:C-1];
    reg signed [31:0]     a_sum     [0:C*M-1];
    reg signed [31:0]     w_sum     [0:C*N-1];
    reg signed [ACC-1:0]  isum_raw  [0:C*M*N-1];
    reg signed [ACC-1:0]  isum      [0:C*M*N-1];

    reg clk = 0, clear = 0, valid = 0;
    reg signed [BITS-1:0] a;
    reg        [BITS-1:0] w;
    reg signed [31:0] za, zw;
    wire signed [ACC-1:0] raw, sum_a, sum_w, count, out;

    int_dot_zp #(.BITS(BITS), .ACC(ACC)) dut (
        .clk(clk), .clear(clear), .valid(valid), .a(a), .w(w), .za(za), .zw(zw),
        .raw(raw), .sum_a(sum_a), .sum_w(sum_w), .count(count), .isum(out));

    always #5 clk = ~clk;

    string dir;
    integer c, m, n, k, idx, errors, checks;

    task check(input [8*12-1:0] what, input integer i, input signed [ACC-1:0] got, input signed [ACC-1:0] want);
        begin
            checks = checks + 1;
            if (got !== want) begin
                errors = errors + 1;
                if (errors <= 10)
                    $display("MISMATCH %0s[%0d] (c=%0d m=%0d n=%0d): expected %h, received %h, xor %h",
                             what, i, c, m, n, want, got, want ^ got);
            end
        end
    endtask

    initial begin
        if (!$value$plusargs("BUNDLE=%s", dir)) begin
            $display("FAIL: pass +BUNDLE=<bundle directory>");
            $fatal(1);
        end
        $readmemh({dir, "/a_codes.hex"}, a_codes);
        $readmemh({dir, "/w_codes.hex"}, w_codes);
        $readmemh({dir, "/a_cluster.hex"}, a_cluster);
        $readmemh({dir, "/a_zero.hex"}, a_zero);
        $readmemh({dir, "/w_zero.hex"}, w_zero);
        $readmemh({dir, "/cluster_size.hex"}, csize);
        $readmemh({dir, "/a_sum.hex"}, a_sum);
        $readmemh({dir, "/w_sum.hex"}, w_sum);
        $readmemh({dir, "/isum_raw.hex"}, isum_raw);
        $readmemh({dir, "/isum.hex"}, isum);
        errors = 0; checks = 0;
        for (c = 0; c < C; c = c + 1)
            for (m = 0; m < M; m = m + 1)
                for (n = 0; n < N; n = n + 1) begin
                    @(negedge clk); clear = 1; valid = 0; za = a_zero[c]; zw = w_zero[n];
                    @(negedge clk); clear = 0;
                    for (k = 0; k < K; k = k + 1)
                        if (a_cluster[k] == c) begin
                            a = a_codes[m*K + k]; w = w_codes[k*N + n]; valid = 1;
                            @(negedge clk);
                        end
                    valid = 0;
                    #1;
                    idx = (c*M + m)*N + n;
                    check("isum_raw", idx, raw, isum_raw[idx]);
                    check("isum", idx, out, isum[idx]);
                    check("a_sum", c*M + m, sum_a, a_sum[c*M + m]);
                    check("w_sum", c*N + n, sum_w, w_sum[c*N + n]);
                    check("cluster_size", c, count, csize[c]);
                end
        if (errors) begin
            $display("FAIL: %0d of %0d checks mismatch", errors, checks);
            $fatal(1);
        end
        $display("PASS: %0d checks", checks);
        $finish;
    end
endmodule

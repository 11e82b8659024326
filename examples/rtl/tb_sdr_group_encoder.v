// Self-checking testbench of sdr_group_encoder against an SDR encode golden bundle
// (sdr_a16_g16, sdr_a16_g32, sdr_w8_g16, sdr_w8_g32).
//
// Compile-time parameters (run_tb.py reads them from manifest.json): G, B, KEEP, R, D.
// Run-time: +BUNDLE=<dir>. Feeds every group of base_int and checks the flag against
// sdr_flags and every code against sdr_codes (sign-magnitude words). PASS, or FAIL + $fatal.
`timescale 1ns/1ps
module tb_sdr_group_encoder;
    parameter G = 16, B = 16, KEEP = 3, R = 8, D = 64;
    localparam NG = D / G;

    reg [B-1:0]    base  [0:R*D-1];
    reg [KEEP:0]   codes [0:R*D-1];
    reg [3:0]      flags [0:R*NG-1];

    reg  [G*B-1:0]        x;
    wire [G*(KEEP+1)-1:0] got_codes;
    wire [3:0]            got_flag;

    sdr_group_encoder #(.G(G), .B(B), .KEEP(KEEP)) dut (.x(x), .codes(got_codes), .flag(got_flag));

    string dir;
    integer r, j, i, errors, checks;
    reg [KEEP:0] gc;

    initial begin
        if (!$value$plusargs("BUNDLE=%s", dir)) begin
            $display("FAIL: pass +BUNDLE=<bundle directory>");
            $fatal(1);
        end
        $readmemh({dir, "/base_int.hex"}, base);
        $readmemh({dir, "/sdr_codes.hex"}, codes);
        $readmemh({dir, "/sdr_flags.hex"}, flags);
        errors = 0; checks = 0;
        for (r = 0; r < R; r = r + 1)
            for (j = 0; j < NG; j = j + 1) begin
                for (i = 0; i < G; i = i + 1)
                    x[i*B +: B] = base[r*D + j*G + i];
                #1;
                checks = checks + 1;
                if (got_flag !== flags[r*NG + j]) begin
                    errors = errors + 1;
                    if (errors <= 10)
                        $display("MISMATCH sdr_flags[%0d] (row %0d group %0d): expected %h, received %h, xor %h",
                                 r*NG + j, r, j, flags[r*NG + j], got_flag, flags[r*NG + j] ^ got_flag);
                end
                for (i = 0; i < G; i = i + 1) begin
                    gc = got_codes[i*(KEEP+1) +: KEEP+1];
                    checks = checks + 1;
                    if (gc !== codes[r*D + j*G + i]) begin
                        errors = errors + 1;
                        if (errors <= 10)
                            $display("MISMATCH sdr_codes[%0d] (row %0d group %0d): x=%h expected %h, received %h, xor %h",
                                     r*D + j*G + i, r, j, base[r*D + j*G + i], codes[r*D + j*G + i], gc,
                                     codes[r*D + j*G + i] ^ gc);
                    end
                end
            end
        if (errors) begin
            $display("FAIL: %0d of %0d checks mismatch", errors, checks);
            $fatal(1);
        end
        $display("PASS: %0d checks", checks);
        $finish;
    end
endmodule

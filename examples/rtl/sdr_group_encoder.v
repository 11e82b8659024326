// QRazor SDR group encoder: G base-precision integers -> G sign-magnitude codes + one flag.
//
//   m_i  = |x_i|                         (x in the symmetric range, |x| <= 2^(B-1) - 1)
//   L    = bit length of (m_0 | ... | m_(G-1))
//   f    = max(0, L - KEEP)              the flag (shift), 4 bits
//   r_i  = (m_i >> f) + ((m_i >> (f-1)) & 1)   when f > 0 (the rounding bit, half up), else m_i
//   r_i  = m_i >> f  when r_i == 2^KEEP  (overflow: floor instead)
//   code = {sign, r_i[KEEP-1:0]}, sign = x_i < 0 and r_i != 0   (magnitude 0 has sign 0)
//
// Combinational. Element i of the group is x[i*B +: B] (element 0 in the low bits).
// Golden stages (bundles sdr_a16_g16/g32, sdr_w8_g16/g32): base_int, sdr_codes, sdr_flags.
`timescale 1ns/1ps
module sdr_group_encoder #(
    parameter G    = 16,
    parameter B    = 16,
    parameter KEEP = 3
) (
    input  wire [G*B-1:0]        x,
    output reg  [G*(KEEP+1)-1:0] codes,
    output reg  [3:0]            flag
);
    integer i, L, f;
    reg [B-1:0] xi, m, orv, r;

    always @* begin
        orv = 0;
        for (i = 0; i < G; i = i + 1) begin
            xi  = x[i*B +: B];
            m   = xi[B-1] ? -xi : xi;
            orv = orv | m;
        end
        L = 0;
        for (i = 0; i < B; i = i + 1)
            if (orv[i]) L = i + 1;
        f = (L > KEEP) ? L - KEEP : 0;
        flag = f[3:0];
        for (i = 0; i < G; i = i + 1) begin
            xi = x[i*B +: B];
            m  = xi[B-1] ? -xi : xi;
            r  = m >> f;
            if (f > 0) r = r + ((m >> (f - 1)) & 1);
            if (r == (1 << KEEP)) r = m >> f;
`ifdef PLANT_RTL_BUG
            if (i == 0 && f == 1) r = r ^ 1;  // a deliberate one-bit error (tests only)
`endif
            codes[i*(KEEP+1) +: KEEP+1] = {xi[B-1] && (r != 0), r[KEEP-1:0]};
        end
    end
endmodule

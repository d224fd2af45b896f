# bench_plot.gp - clustered bars of GFLOP/s per shape; called by bench_plot.sh with
#   datafile (header: shape impl...), outfile, peak (GFLOP/s of one core), ymax, ncols, title.
set terminal pngcairo size 1500,700 font "sans,10"
set output outfile
set title sprintf("%s: GFLOP/s per shape (higher is better); dashed line: measured fp32 FMA peak of one core, %.0f GFLOP/s", title, peak)
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set datafile missing "?"
set key top left autotitle columnheader opaque box
set ylabel "GFLOP/s"
set yrange [0:ymax]
set grid ytics
set xtics rotate by 30 right noenhanced
set key noenhanced
set bmargin 9
set arrow 1 from graph 0, first peak to graph 1, first peak nohead dt 2 lw 2 lc rgb "black" back
set label 1 sprintf("FMA peak %.0f", peak) at graph 0.995, first peak offset 0,0.7 right front
plot for [i=2:ncols] datafile using i:xtic(1)

# plot_training.gp - training curves from a dlcore CSV log as a PNG.
#   gnuplot -e "in='log.csv'; out='curves.png'" tools/plot_training.gp
# The log's header is  epoch,loss,accuracy,val_loss,val_accuracy,seconds ; the
# val_* columns hold nan (or nothing) when there was no validation set, and
# then only the training curves are drawn. `out` defaults to in.png.
if (!exists("in")) { print "usage: gnuplot -e \"in='log.csv'; out='curves.png'\" tools/plot_training.gp"; exit status 1 }
if (!exists("out")) { out = in . ".png" }

set datafile separator comma

# nan, -nan, NaN and empty fields all read as undefined points, which plot skips.
# A plot whose every point is undefined is an error, though, so count the usable
# validation values first (stats only warns on a column without any: the
# "No valid data points" warning for a log without validation is expected).
stats in skip 1 using 2 nooutput
nepochs = exists("STATS_records") ? STATS_records : 0
undefine STATS_*
stats in skip 1 using 4 nooutput
nval = exists("STATS_records") ? STATS_records : 0
if (nepochs < 1) { print sprintf("plot_training: %s has no data rows", in); exit status 1 }

set terminal pngcairo size 1200,480 font ",11" noenhanced   # file names keep their underscores
set output out
set multiplot layout 1,2 title sprintf("%s (%d epochs)", in, nepochs)
set grid
set offsets 0.2, 0.2, 0, 0   # keep end points off the frame
set xlabel "epoch"
set key top right
if (nepochs == 1) { set xrange [0.5:1.5] } else { set xrange [*:*] }
set xtics 1
if (nepochs > 20) { set xtics autofreq }

set title "loss"
set ylabel "loss"
if (nval > 0) {
    plot in skip 1 using 1:2 with linespoints lw 2 pt 7 ps 0.6 title "train", \
         ""  skip 1 using 1:4 with linespoints lw 2 pt 5 ps 0.6 title "validation"
} else {
    plot in skip 1 using 1:2 with linespoints lw 2 pt 7 ps 0.6 title "train"
}

set title "accuracy"
set ylabel "accuracy"
set key bottom right
if (nval > 0) {
    plot in skip 1 using 1:3 with linespoints lw 2 pt 7 ps 0.6 title "train", \
         ""  skip 1 using 1:5 with linespoints lw 2 pt 5 ps 0.6 title "validation"
} else {
    plot in skip 1 using 1:3 with linespoints lw 2 pt 7 ps 0.6 title "train"
}
unset multiplot
set output
print sprintf("plot_training: wrote %s", out)
